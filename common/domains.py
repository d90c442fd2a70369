"""The corpus domains every stage knows: data prep writes them, mixtures read them, the
anneal study scores them. A `<domain>_hq` task is a domain's high-quality subset."""

DOMAINS = ("web", "math", "code")
HQ_SUFFIX = "_hq"
