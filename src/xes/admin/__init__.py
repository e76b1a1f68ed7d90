"""Server administration: one set of operations (:mod:`xes.admin.service`) behind the admin
HTTP API, the status page and the XEP-0133 ad-hoc commands, with one authentication
(:mod:`xes.admin.auth`)."""
