"""Backend modules; see base.Backend for the contract."""
