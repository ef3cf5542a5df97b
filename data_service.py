"""Starts a tf.data service dispatcher or worker: the input pipeline of train.py on other hosts.

A dispatcher hands out the work; each worker runs the per-element part of the input pipeline
(read, parse, decode, crop, augment) and streams the elements to the trainers, which batch them
and prefetch them to the GPU (train.py --data_service_address; input_service.py says how):

    python data_service.py --role=dispatcher --port=5050 --work_dir=/shared/ds     # host A
    python data_service.py --role=worker --port=5051 --dispatcher_address=grpc://hostA:5050
    python train.py --data_service_address=grpc://hostA:5050 ...                   # GPU host

Workers need only TensorFlow and the records, at the same paths as the trainer (shared
storage): the trainer sends them the pipeline's graph. With --work_dir the dispatcher runs in
TensorFlow's fault-tolerant mode: it journals its datasets and jobs there, and a dispatcher
restarted on the same port and folder recovers them while workers and trainers retry. Each
server prints a status line a second (--status_secs) and runs until Ctrl-C or SIGTERM (exit
status 0).
"""

import os
import signal
import socket
import time

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import tensorflow as tf

import configs
from multilabel import arguments, errors
from multilabel.data import input_service
from multilabel.runtime import log



def start_server(config):
  """The started DispatchServer or WorkerServer. A port in use is a ConfigError."""
  service = tf.data.experimental.service
  try:
    if config.role == "dispatcher":
      return service.DispatchServer(service.DispatcherConfig(
          port=config.port, work_dir=config.work_dir or None,
          fault_tolerant_mode=bool(config.work_dir)))
    host = config.worker_address or socket.gethostname()
    return service.WorkerServer(service.WorkerConfig(
        dispatcher_address=input_service.parse_address(config.dispatcher_address,
                                                       "--dispatcher_address"),
        worker_address=host if ":" in host else f"{host}:%port%", port=config.port))
  except (tf.errors.OpError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0]
    raise errors.ConfigError(f"--role={config.role} --port={config.port}: cannot start: "
                             f"{first}") from None


class Status:
  """One line about the server: its workers (dispatcher) or tasks (worker: one per job it
  serves), the CPU cores this process used since the last line, and the uptime."""

  def __init__(self, config, server):
    self.config, self.server = config, server
    self.start = self.last_wall = time.time()
    self.last_cpu = sum(os.times()[:2])

  def line(self):
    now, cpu = time.time(), sum(os.times()[:2])
    cores = (cpu - self.last_cpu) / max(now - self.last_wall, 1e-9)
    self.last_wall, self.last_cpu = now, cpu
    up = int(now - self.start)
    clock = f"{up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}"
    # pylint: disable=protected-access
    # _num_workers, _num_tasks: no public query exists; TensorFlow's own tests use these
    if self.config.role == "dispatcher":
      what = f"{self.server._num_workers()} worker(s) registered"
    else:
      what = f"{self.server._num_tasks()} task(s) (one a job) for {self.config.dispatcher_address}"
    return f"{self.config.role} :{self.port}: {what}, CPU {cores:.2f} cores, up {clock}"

  @property
  def port(self):
    return self.server._address.rsplit(":", 1)[-1]  # pylint: disable=protected-access


def wait_for_signal(status, every):
  """Prints status.line() every `every` seconds (none if 0) until SIGINT or SIGTERM; returns
  the signal's name."""
  received = []
  handler = lambda signum, _frame: received.append(signal.Signals(signum).name)
  previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    next_line = time.time() + every
    while not received:
      time.sleep(0.1)
      if every > 0 and time.time() >= next_line:
        log(status.line())
        next_line += every
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)
  return received[0]


def main(argv):
  config = configs.DataServiceConfig()  # edit here, e.g. role="worker", dispatcher_address=...
  arguments.parse_overrides(argv, config, usage=__doc__)
  if config.role == "worker":  # TensorFlow's worker would retry an absent dispatcher for an hour
    workers = input_service.check_dispatcher(config.dispatcher_address, config.timeout_secs,
                                              "--dispatcher_address", "--timeout_secs")
    log(f"the dispatcher at {config.dispatcher_address} answered ({workers} worker(s) so far)")
  server = start_server(config)
  status = Status(config, server)
  if config.role == "dispatcher":
    journal = (f"fault-tolerant: its journal is in {config.work_dir}" if config.work_dir
               else "no --work_dir: a restart forgets its jobs")
    log(f"dispatcher on port {status.port} ({journal}); give workers --dispatcher_address and "
        f"trainers --data_service_address=grpc://{socket.gethostname()}:{status.port}")
  else:
    log(f"worker on port {status.port}, registered with {config.dispatcher_address}")
  name = wait_for_signal(status, config.status_secs)
  server.stop()
  log(f"received {name}: stopped")
  return 0


if __name__ == "__main__":
  errors.run(main)
