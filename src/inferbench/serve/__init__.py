"""Serving scenarios (MLPerf SingleStream, Offline, Server) driven by LoadGen.

``settings`` (config checks and per-job settings; imported at workflow parse time, so
no runtime and no LoadGen), ``traffic`` (request lengths and padding strategies),
``batcher`` (the Server's dynamic batcher), ``search`` (highest QPS under the latency
target), ``sut`` (LoadGen's system under test and query sample library), ``job`` (one
serving job) and ``report`` (serving table, plots, findings).
"""
