"""A device plugin written with grpcio, as Python plugins are: the interop test of
tests/e2e/devices_python.rs. Its gRPC code is generated from device-plugins/api/proto/api.proto
at start with grpc_tools.protoc. It serves DevicePlugin on <dir>/<endpoint> (2 devices,
preferred allocation offered) and registers with <dir>/kubelet.sock. Every call is appended to
the --calls file, one line each, for the test to read.

usage: plugin.py --dir DIR --resource NAME --endpoint FILE --calls FILE --mount DIR
                 [--authority VALUE]   (grpc.default_authority of the registration channel)
"""
import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "..", "..", "..", "device-plugins", "api", "proto")
DEVICES = ["py0", "py1"]

args = argparse.ArgumentParser()
args.add_argument("--dir", required=True)
args.add_argument("--resource", required=True)
args.add_argument("--endpoint", required=True)
args.add_argument("--calls", required=True)
args.add_argument("--mount", required=True)
args.add_argument("--authority")
args = args.parse_args()

lock = threading.Lock()


def log(line):
    with lock, open(args.calls, "a") as f:
        f.write(line + "\n")


gen = tempfile.mkdtemp(prefix="tidelet-py-plugin-")
if protoc.main(["protoc", "-I" + PROTO_DIR, "--python_out=" + gen,
                "--grpc_python_out=" + gen, "api.proto"]) != 0:
    sys.exit("grpc_tools.protoc failed on " + PROTO_DIR)
sys.path.insert(0, gen)
import api_pb2  # noqa: E402
import api_pb2_grpc  # noqa: E402


class Plugin(api_pb2_grpc.DevicePluginServicer):
    def GetDevicePluginOptions(self, request, context):
        log("GetDevicePluginOptions")
        return api_pb2.DevicePluginOptions(get_preferred_allocation_available=True)

    def ListAndWatch(self, request, context):
        log("ListAndWatch")
        yield api_pb2.ListAndWatchResponse(
            devices=[api_pb2.Device(ID=d, health="Healthy") for d in DEVICES])
        while context.is_active():
            time.sleep(0.2)

    def GetPreferredAllocation(self, request, context):
        out = []
        for c in request.container_requests:
            log("GetPreferredAllocation available=%s size=%d"
                % (",".join(sorted(c.available_deviceIDs)), c.allocation_size))
            # The last ones: a pick the agent would not make by itself.
            pick = sorted(c.available_deviceIDs)[-c.allocation_size:]
            out.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=pick))
        return api_pb2.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request, context):
        out = []
        for c in request.container_requests:
            log("Allocate " + ",".join(c.devices_ids))
            out.append(api_pb2.ContainerAllocateResponse(
                envs={"PY_DEVICES": ",".join(c.devices_ids)},
                mounts=[api_pb2.Mount(container_path="/py-dev", host_path=args.mount,
                                      read_only=True)]))
        return api_pb2.AllocateResponse(container_responses=out)

    def PreStartContainer(self, request, context):
        log("PreStartContainer " + ",".join(request.devices_ids))
        return api_pb2.PreStartContainerResponse()


kubelet = os.path.join(args.dir, "kubelet.sock")
# The agent removes every socket in the directory before it serves kubelet.sock.
for _ in range(200):
    if os.path.exists(kubelet):
        break
    time.sleep(0.1)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
api_pb2_grpc.add_DevicePluginServicer_to_server(Plugin(), server)
server.add_insecure_port("unix://" + os.path.join(args.dir, args.endpoint))
server.start()

options = []
if args.authority is not None:
    options.append(("grpc.default_authority", args.authority))
with grpc.insecure_channel("unix://" + kubelet, options=options) as channel:
    try:
        api_pb2_grpc.RegistrationStub(channel).Register(
            api_pb2.RegisterRequest(
                version="v1beta1", endpoint=args.endpoint, resource_name=args.resource,
                options=api_pb2.DevicePluginOptions(get_preferred_allocation_available=True)),
            timeout=10)
    except grpc.RpcError as e:
        log("register-failed grpcio %s: %s %s" % (grpc.__version__, e.code(), e.details()))
        sys.exit(1)
log("registered grpcio %s authority %r" % (grpc.__version__, args.authority))
server.wait_for_termination()
