"""The workers: the local worker thread that loads a model and runs edits, the pool that says which free worker
takes which job, and the Ray path (``--ray``) that runs the same work on remote actors."""
