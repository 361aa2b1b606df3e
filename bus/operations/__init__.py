"""Operations: what people run. The command line, the embedded stack (``up``), the demo and
its mail server, the benchmark and the auditor."""
