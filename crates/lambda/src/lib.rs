//! gzship's Lambda handlers (master and worker). Not written yet: see issue 6.
