"""The verbs (fit, assign, evaluate): functions the CLI calls, usable from Python."""
