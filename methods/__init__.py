"""wsseg's built-in methods, one file per method (installed as the package ``wsseg_methods``).

Each file registers one method whose name is the file stem; ``pyproject.toml`` declares each in the
``wsseg.methods`` entry-point group, the same group third-party plugins use.
"""
