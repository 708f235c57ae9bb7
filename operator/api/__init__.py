"""The ModelDeployment API: pydantic types (the source of the CRD) and the CRD generator."""
