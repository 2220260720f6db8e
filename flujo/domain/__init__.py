"""Plain domain types shared by the engine, the runtimes and the agents.

Nothing here does I/O; everything is importable from the state machine.
"""
