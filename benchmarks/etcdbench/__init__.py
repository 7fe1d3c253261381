"""dkv against etcd on the same machine, with the same load generator
(``python benchmarks/vs_etcd.py``; its help is ``cli``'s docstring), what
one dkv write costs (``python benchmarks/write_cost.py``: ``cost``), and
watch fan-out and lease keep-alives over gRPC, side by side
(``watch_fanout.py``: ``fanout``; ``lease_keepalive.py``: ``keepalive``), and
how costs grow (``scaling.py``: ``scaling_cli``).
See benchmarks/README.md.

``runs``        what is measured: the runs (v0 and v3 groups), the two systems, what a cluster offers
``etcd``        three etcd members, launched by ``dkv.testing.etcd_cluster``
``dkv_cluster`` three dkv nodes, launched by ``dkv.testing.cluster``
``load``        the wrk driver (``load.lua``): jobs, their results, one measured run
``report``      the summary over rounds, the table and the chart
``machine``     what the numbers were measured on
``scale``       the scale figures: memory, restart and catch-up at N keys
``targets``     issue 16's targets: PASS/FAIL per target and run from the summary
``procstat``    CPU time and resident memory of processes, from /proc
``growth``      how a cost grows: log-log slope, named (flat, linear, ...)
``scaling``     the scaling picture's sections (``python benchmarks/scaling.py``)
``scaling_cli`` its command line; ``scaling_chart`` its charts
``cli``         the command line and the comparison loop
``cost``        CPU and bytes on disk per write of a 3-node dkv (write_cost.py), with --idempotency
``sides``       the gRPC benchmarks' common options and their loop over the systems
``grpc_streams`` channels, request feeds, Watch streams, the UNIMPLEMENTED probes
``stats``       latency histograms that merge across processes; markdown tables
``fanout``      watch fan-out: watchers over shared streams in receiving processes, a paced writer
``keepalive``   lease grants and keep-alive streams
"""
