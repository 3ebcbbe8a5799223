"""
The reference client: what an SDK must do against Cohort's SDK contract, in plain Python (no
Django, nothing of the server). Swift and Kotlin authors read it as the reference
(docs/sdk.md).
"""
