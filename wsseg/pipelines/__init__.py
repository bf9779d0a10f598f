"""The commands, one module each: the only code that wires the stage libraries together."""
