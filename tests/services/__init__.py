"""Service programs written for the tests: the master runs them like any other."""
