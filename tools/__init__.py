"""Generators for the files committed beside the package (man page, shell completions, the
completion tree): run from the checkout, never shipped nor imported by `byokctl` at run time."""
