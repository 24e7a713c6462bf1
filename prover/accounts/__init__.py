"""Billing accounts: who pays for which users, admission of usage, prepaid limits, and the
payer's statement (docs/epoch.md, "Billing accounts")."""
