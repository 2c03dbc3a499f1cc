"""The rules of the product as pure functions (SPEC §1, §3): plans and the BYOK gate, grace,
budgets, credit arithmetic, roles and the resolution chain. No I/O, no clock, no store."""
