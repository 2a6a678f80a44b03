"""The names the mod and the workflow share on the wire."""

#: The name of the ConfigRecord our stages travel in (Flower's SecAgg+ uses "secaggplus_configs",
#: so both can coexist in one app).
RECORD_KEY = "secure-aggregation"
