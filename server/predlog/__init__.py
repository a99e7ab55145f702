"""The prediction log: a sampled, durable Parquet record of served rows and their labels.

- :mod:`server.predlog.format`: the files' layout, names and schemas (the readers' contract);
- :mod:`server.predlog.writer`: the writer thread (queue, files, rotation, errors);
- :mod:`server.predlog.bound`: the disk bound (the oldest files go first);
- :mod:`server.predlog.metrics`: its counters and their Prometheus collector;
- :mod:`server.predlog.extension`: the app extension and the sampling observer.
"""

from server.predlog.extension import PredictionLogExtension

__all__ = ["PredictionLogExtension"]
