"""The jobs: the protocol (what a job, a cancel and a status are), the queue, the spool on disk and the service
that accepts, queues, cancels and reports jobs for every transport. No torch, no sockets."""
