"""The pseudonymised analytical extract: Parquet tables the rule catalogue runs over.

Two builders write the same schema (:mod:`usmis.oversight.extract.schema`):

* :mod:`.store` — the production path: linked data from the USMIS store and the patient
  index, incremental by ``last_updated`` watermark;
* :mod:`.nation` — a development/evaluation path that reads a synthetic nation's feeds
  directly, with the ground truth's person ids standing in for linked person keys.
"""
