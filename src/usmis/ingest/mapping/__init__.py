"""Pure source → FHIR mappers: no database, no HTTP; each returns a transaction Bundle.

Every resource is written with a conditional PUT on the source's own identifier
(``https://usmis.kz/sid/source/{source_id}/{kind}``), so mapping the same record twice
yields the same request and a replay changes nothing.
"""
