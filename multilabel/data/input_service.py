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
because TensorFlow's own client keeps retrying an unreachable dispatcher.
"""

import re
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
