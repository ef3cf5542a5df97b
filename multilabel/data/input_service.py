"""The trainer's side of the tf.data service: the input pipeline's per-element work on other hosts.

With `--data_service_address=grpc://host:port`, train.py (and evaluate.py) hand the per-element
part of `build_dataset` (the file and record shuffles, read, parse, decode, crop, augment) to the
workers of a tf.data service (`tf.data.experimental.service`; data_service.py starts its
dispatcher and workers). The elements come back one by one over gRPC; the batch and the prefetch
to the device stay in the trainer:

    service = input_service.connect("grpc://10.0.0.5:5050", timeout_secs=30)  # or an error
    ds = build_dataset(config, "train", service=service.job("train:runs/a:0"))

Processing mode: "distributed_epoch" (ShardingPolicy.DYNAMIC). The dispatcher hands the record
files out one at a time to whichever worker asks next, so
- an epoch reads each record once over all the workers together (an eval pass through the
  service sees every record as often as without it), and a faster worker takes more files;
- workers may join or leave while a job runs (a worker's file in progress is lost for that
  epoch: "at most once");
- trainers that share a job (the same job name: every worker of a multi-worker run) take the
  job's elements first come, first served, so no two get the same one.
The other mode, "parallel_epochs", has every worker read the whole data set: with the default
fixed seed every worker would then make the same stream, and an eval pass would see each record
once per worker. What this costs: the unit of work is a file, and a worker takes several at a
time (up to 8 for build_dataset's interleave; in training up to all of them for its file
shuffle), so write many more files than workers (`create_tfrecord.py --num_shards`), or one
worker may do most of a one-pass eval; and the order of the elements is not reproducible.

Standard gRPC (grpcio, which TensorFlow depends on) checks the dispatcher before any work,
because TensorFlow's own client keeps retrying an unreachable dispatcher. For the same reason a
train step whose workers are all gone waits for ever inside TensorFlow, deaf to signals: the
trainer runs each step in a helper thread (run_step), and stops one that has waited for its
batch too long, or when a signal came, before that step changes anything (ElementWatch).
"""

import re
import threading
import time
from typing import NamedTuple

import grpc
import tensorflow as tf

from multilabel import errors

PROCESSING_MODE = "distributed_epoch"  # why: the module docstring
# The dispatcher's RPCs (tensorflow/core/data/service/dispatcher.proto): both take an empty
# request, so the check needs no generated code.
_GET_VERSION = "/tensorflow.data.DispatcherService/GetVersion"
_GET_WORKERS = "/tensorflow.data.DispatcherService/GetWorkers"
_ADDRESS = re.compile(r"^(?:(?P<protocol>[a-z]+)://)?(?P<host>[^\s:/]+|\[[0-9a-fA-F:]+\])"
                      r":(?P<port>\d+)$")


def parse_address(address, flag="--data_service_address"):
  """'grpc://host:port' or 'host:port' -> 'host:port'; a ConfigError naming anything else."""
  match = _ADDRESS.match(address.strip())
  if not match or not 0 < int(match["port"]) < 65536:
    raise errors.ConfigError(f"{flag}={address!r}: expected grpc://host:port, e.g. "
                             "grpc://10.0.0.5:5050 (data_service.py --role=dispatcher's port)")
  if match["protocol"] not in (None, "grpc"):
    raise errors.ConfigError(f"{flag}={address!r}: protocol {match['protocol']!r}; the tf.data "
                             "service here speaks grpc://")
  return f"{match['host']}:{match['port']}"


def _count_entries(message):
  """The number of field-1 entries in a serialized protobuf whose fields are all
  length-delimited (GetWorkersResponse: repeated WorkerInfo workers = 1)."""
  def varint(at):
    value, shift = 0, 0
    while True:
      byte = message[at]
      value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
      if byte < 0x80:
        return value, at
  count, at = 0, 0
  while at < len(message):
    key, at = varint(at)
    length, at = varint(at)
    count, at = count + (key >> 3 == 1), at + length
  return count


def check_dispatcher(address, timeout_secs, flag="--data_service_address",
                     timeout_flag="--data_service_timeout_secs"):
  """Asks the dispatcher at `address` for its version and its workers.

  Returns:
    the number of workers registered with it.
  Raises:
    errors.ConfigError: a malformed address (parse_address).
    errors.DataError: nothing answers within timeout_secs, or what answers is no tf.data
      dispatcher.
  """
  target = parse_address(address, flag)
  if timeout_secs <= 0:
    raise errors.ConfigError(f"{timeout_flag}={timeout_secs}: expected > 0 seconds")
  with grpc.insecure_channel(target) as channel:
    try:
      grpc.channel_ready_future(channel).result(timeout=timeout_secs)
      call = lambda method: channel.unary_unary(method)(b"", timeout=timeout_secs)
      call(_GET_VERSION)
      return _count_entries(call(_GET_WORKERS))
    except grpc.FutureTimeoutError:
      raise errors.DataError(f"{flag}={address!r}: no tf.data dispatcher answered within "
                             f"{timeout_secs} s (is data_service.py --role=dispatcher running "
                             "there, and the port open?)") from None
    except grpc.RpcError as e:
      details = f" ({e.details()})" if e.details() else ""
      raise errors.DataError(f"{flag}={address!r} answers, but not as a tf.data dispatcher: "
                             f"{e.code().name}{details}") from None


class Service(NamedTuple):
  """Where build_dataset sends its per-element pipeline: a dispatcher, and the job to share.

  job_name: trainers that give the same name share one job (and split its elements); None
    makes a job of its own for each pass over the dataset (evaluation). A finished job's name
    must not be given again: its consumers would get no element.
  """
  address: str
  job_name: str = None

  def job(self, job_name):
    return self._replace(job_name=job_name)

  def distribute(self, dataset, what="the input pipeline"):
    """dataset.apply(tf.data.experimental.service.distribute(...)): what comes before runs on
    the workers. Registering sends the dataset's graph to the dispatcher; a pipeline that
    cannot be sent is a ConfigError naming the error."""
    try:
      return dataset.apply(tf.data.experimental.service.distribute(
          PROCESSING_MODE, f"grpc://{parse_address(self.address)}", job_name=self.job_name))
    except (tf.errors.OpError, ValueError, TypeError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise errors.ConfigError(f"--data_service_address: {what} cannot run on the tf.data "
                               f"service ({first}); run without the service") from None


def connect(address, timeout_secs, log=print):
  """check_dispatcher, logging what it found; returns a Service with no job name."""
  workers = check_dispatcher(address, timeout_secs)
  log(f"input: the tf.data service at {address} ({workers} worker(s) registered"
      + (", none yet: the first step waits for one)" if not workers else ")")
      + f"; processing_mode={PROCESSING_MODE}")
  return Service(address)


def train_job_name(train_dir, step):
  """The job every worker of one multi-worker run joins: the same train_dir and start step give
  the same name; a resumed run starts a job of its own."""
  return f"train:{train_dir.rstrip('/') or '/'}:{step}"


class ElementWatch:
  """How long the train step in progress has waited for its batch from the service, and a way
  to stop it while it waits, before it changes anything.

  The step calls asked() just before its next(iterator) and got() once it has the batch (each a
  tf.py_function; train_step.watched_next), and all its changes wait for got(). A step stopped
  while it waits never gets past got(), so the model stays as the last finished step left it,
  ready to be saved.
  """

  def __init__(self, timeout_secs):
    self.timeout_secs = timeout_secs
    self._lock = threading.Lock()
    self._asked = None  # when the step in progress asked for its batch; None once it has it
    self._stopped = False

  def asked(self):
    with self._lock:
      self._asked = time.monotonic()
    return True

  def got(self, *_):
    with self._lock:
      if self._stopped:  # fails that step before its changes; nobody waits for it any more
        raise RuntimeError("the step was stopped while it waited for the tf.data service")
      self._asked = None
    return True

  def waited(self):
    """Seconds the step in progress has waited for its batch (0 once it has it)."""
    with self._lock:
      return 0.0 if self._asked is None else time.monotonic() - self._asked

  def stop_waiting_step(self):
    """True if the step in progress was still waiting for its batch: it is stopped and will
    change nothing. False if it has its batch: it will finish."""
    with self._lock:
      self._stopped = self._asked is not None
      return self._stopped


def run_step(step, watch, should_stop, poll_secs=0.5):
  """step() in a helper thread, looking every poll_secs whether it waits for its batch longer
  than watch.timeout_secs, or should_stop() (a signal came, which the main thread can now
  take). Returns step()'s result, or None if it stopped the step while it waited. The helper
  thread of a stopped step stays blocked inside TensorFlow until the process ends (a daemon)."""
  outcome = {}

  def target():
    try:
      outcome["result"] = step()
    except BaseException as e:  # pylint: disable=broad-except  # raised again below
      outcome["error"] = e

  thread = threading.Thread(target=target, name="train step", daemon=True)
  thread.start()
  while thread.is_alive():
    thread.join(poll_secs)
    if thread.is_alive() and (should_stop() or watch.waited() >= watch.timeout_secs) and (
        watch.stop_waiting_step()):
      return None
  if "error" in outcome:
    raise outcome["error"]
  return outcome["result"]


def stall_error(address, timeout_secs, step_no, saved):
  """The line train.py stops with when the service gave the step no batch for timeout_secs."""
  then = (f"saved {saved}: start workers and rerun to resume from it" if saved else
          "rerun once its workers are back")
  return errors.DataError(
      f"the tf.data service at {address} gave no element for {timeout_secs} s "
      f"(--data_service_timeout_secs) after step {step_no}: are its workers running "
      f"(data_service.py --role=worker --dispatcher_address={address})? {then}")
