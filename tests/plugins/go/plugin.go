// A device plugin written in Go with grpc-go, as most real plugins are (NVIDIA's, Intel's,
// the Kubernetes sample plugin): the interop test of tests/e2e/devices_go.rs. Built by
// build.sh from Debian 12's packages (grpc-go 1.33.3, golang/protobuf 1.3.5), its gRPC code
// generated from device-plugins/api/proto/api.proto.
//
// It serves DevicePlugin on <dir>/<endpoint> and registers with <dir>/kubelet.sock the way
// those plugins do: grpc.Dial with the socket's path as a passthrough target and a custom
// dialer doing net.Dial("unix", path). grpc-go then sends that path as the HTTP/2 :authority,
// which h2 refuses without the agent's AuthorityFix. The dialer also reads the :authority off
// the wire, so the test knows what was really sent.
//
// Devices go0, go1, go2, all healthy; SIGUSR1 turns go0 unhealthy, SIGUSR2 healthy again (a new
// ListAndWatch list each time). GetPreferredAllocation picks the last available IDs (a choice
// the agent would not make by itself); Allocate gives GO_DEVICES, a read-only mount of
// --mount at /go-dev and /dev/null as /dev/go-null. Every call and event is one JSON line on
// stdout; errors go to stderr.
//
// usage: tidelet-go-plugin --dir DIR --resource NAME --endpoint FILE --mount DIR
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"

	pb "tidelet/v1beta1"
)

var (
	dir      = flag.String("dir", "", "the device-plugin directory")
	resource = flag.String("resource", "", "the extended resource name")
	endpoint = flag.String("endpoint", "", "the plugin's socket file name in --dir")
	mount    = flag.String("mount", "", "host directory Allocate mounts at /go-dev")
)

var outMu sync.Mutex

// emit writes one JSON object as one line of stdout (unbuffered in Go: one write each).
func emit(fields map[string]interface{}) {
	line, err := json.Marshal(fields)
	if err != nil {
		fmt.Fprintln(os.Stderr, "json:", err)
		os.Exit(2)
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tidelet-go-plugin: "+format+"\n", args...)
	os.Exit(1)
}

// devices holds the device list and wakes every ListAndWatch stream when it changes.
type devices struct {
	mu       sync.Mutex
	ids      []string
	health   map[string]string
	watchers map[chan struct{}]bool
}

func (d *devices) list() []*pb.Device {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*pb.Device, 0, len(d.ids))
	for _, id := range d.ids {
		out = append(out, &pb.Device{ID: id, Health: d.health[id]})
	}
	return out
}

func (d *devices) setHealth(id, health string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.health[id] = health
	for w := range d.watchers {
		// Capacity one: a stream that has not sent yet sends the latest list once.
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (d *devices) watch() (chan struct{}, func()) {
	w := make(chan struct{}, 1)
	d.mu.Lock()
	d.watchers[w] = true
	d.mu.Unlock()
	return w, func() {
		d.mu.Lock()
		delete(d.watchers, w)
		d.mu.Unlock()
	}
}

type plugin struct {
	pb.UnimplementedDevicePluginServer
	devs *devices
}

func options() *pb.DevicePluginOptions {
	return &pb.DevicePluginOptions{PreStartRequired: true, GetPreferredAllocationAvailable: true}
}

func (p *plugin) GetDevicePluginOptions(ctx context.Context, _ *pb.Empty) (*pb.DevicePluginOptions, error) {
	emit(map[string]interface{}{"call": "GetDevicePluginOptions"})
	return options(), nil
}

func (p *plugin) ListAndWatch(_ *pb.Empty, s pb.DevicePlugin_ListAndWatchServer) error {
	emit(map[string]interface{}{"call": "ListAndWatch"})
	w, stop := p.devs.watch()
	defer stop()
	for {
		list := p.devs.list()
		health := map[string]string{}
		for _, d := range list {
			health[d.ID] = d.Health
		}
		if err := s.Send(&pb.ListAndWatchResponse{Devices: list}); err != nil {
			emit(map[string]interface{}{"event": "ListAndWatch-ended", "error": err.Error()})
			return err
		}
		emit(map[string]interface{}{"event": "ListAndWatch-sent", "devices": health})
		select {
		case <-w:
		case <-s.Context().Done():
			emit(map[string]interface{}{"event": "ListAndWatch-ended"})
			return nil
		}
	}
}

func (p *plugin) GetPreferredAllocation(ctx context.Context, r *pb.PreferredAllocationRequest) (*pb.PreferredAllocationResponse, error) {
	out := &pb.PreferredAllocationResponse{}
	for _, c := range r.ContainerRequests {
		avail := append([]string(nil), c.AvailableDeviceIDs...)
		sort.Strings(avail)
		n := int(c.AllocationSize)
		if n > len(avail) {
			n = len(avail)
		}
		pick := avail[len(avail)-n:]
		emit(map[string]interface{}{
			"call": "GetPreferredAllocation", "available": avail,
			"must_include": c.MustIncludeDeviceIDs, "size": c.AllocationSize, "picked": pick,
		})
		out.ContainerResponses = append(out.ContainerResponses,
			&pb.ContainerPreferredAllocationResponse{DeviceIDs: pick})
	}
	return out, nil
}

func (p *plugin) Allocate(ctx context.Context, r *pb.AllocateRequest) (*pb.AllocateResponse, error) {
	out := &pb.AllocateResponse{}
	for _, c := range r.ContainerRequests {
		emit(map[string]interface{}{"call": "Allocate", "devices": c.DevicesIds})
		out.ContainerResponses = append(out.ContainerResponses, &pb.ContainerAllocateResponse{
			Envs:    map[string]string{"GO_DEVICES": strings.Join(c.DevicesIds, ",")},
			Mounts:  []*pb.Mount{{ContainerPath: "/go-dev", HostPath: *mount, ReadOnly: true}},
			Devices: []*pb.DeviceSpec{{ContainerPath: "/dev/go-null", HostPath: "/dev/null", Permissions: "rw"}},
		})
	}
	return out, nil
}

func (p *plugin) PreStartContainer(ctx context.Context, r *pb.PreStartContainerRequest) (*pb.PreStartContainerResponse, error) {
	emit(map[string]interface{}{"call": "PreStartContainer", "devices": r.DevicesIds})
	return &pb.PreStartContainerResponse{}, nil
}

// authoritySniffer wraps the registration connection and decodes the client's first header
// block (HPACK, with a fresh table: it is the connection's first) as it is written, so the
// :authority reported is the one on the wire, not what grpc-go's code suggests it should be.
type authoritySniffer struct {
	net.Conn
	buf  []byte
	done bool
	once sync.Once
	seen chan string
}

func (c *authoritySniffer) Write(p []byte) (int, error) {
	if !c.done {
		c.buf = append(c.buf, p...)
		if a, ok := firstAuthority(c.buf); ok {
			c.done = true
			c.buf = nil
			c.once.Do(func() { c.seen <- a })
		}
	}
	return c.Conn.Write(p)
}

// firstAuthority parses the client side of an HTTP/2 connection (preface, then frames) and
// returns the :authority of the first complete header block (HEADERS + CONTINUATIONs).
func firstAuthority(b []byte) (string, bool) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	if len(b) < len(preface) || !bytes.Equal(b[:len(preface)], []byte(preface)) {
		return "", false
	}
	b = b[len(preface):]
	var block []byte
	inBlock := false
	for len(b) >= 9 {
		n := int(binary.BigEndian.Uint32(append([]byte{0}, b[:3]...)))
		typ, flags := b[3], b[4]
		if len(b) < 9+n {
			return "", false
		}
		payload := b[9 : 9+n]
		b = b[9+n:]
		switch {
		case typ == 0x1 && !inBlock: // HEADERS
			if flags&0x8 != 0 { // PADDED
				pad := int(payload[0])
				payload = payload[1 : len(payload)-pad]
			}
			if flags&0x20 != 0 { // PRIORITY
				payload = payload[5:]
			}
			block, inBlock = append(block, payload...), true
		case typ == 0x9 && inBlock: // CONTINUATION
			block = append(block, payload...)
		default:
			continue
		}
		if flags&0x4 == 0 { // not END_HEADERS yet
			continue
		}
		fields, err := hpack.NewDecoder(4096, nil).DecodeFull(block)
		if err != nil {
			return "hpack error: " + err.Error(), true
		}
		for _, f := range fields {
			if f.Name == ":authority" {
				return f.Value, true
			}
		}
		return "(none)", true
	}
	return "", false
}

func main() {
	flag.Parse()
	if *dir == "" || *resource == "" || *endpoint == "" || *mount == "" {
		fatal("--dir, --resource, --endpoint and --mount are required")
	}
	kubelet := filepath.Join(*dir, "kubelet.sock")
	// The agent removes every socket in the directory before it serves kubelet.sock: ours is
	// made after that.
	for i := 0; ; i++ {
		if _, err := os.Stat(kubelet); err == nil {
			break
		}
		if i == 300 {
			fatal("%s did not appear", kubelet)
		}
		time.Sleep(100 * time.Millisecond)
	}

	devs := &devices{
		ids:      []string{"go0", "go1", "go2"},
		health:   map[string]string{"go0": "Healthy", "go1": "Healthy", "go2": "Healthy"},
		watchers: map[chan struct{}]bool{},
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range sigs {
			h := "Healthy"
			if s == syscall.SIGUSR1 {
				h = "Unhealthy"
			}
			emit(map[string]interface{}{"event": "health", "device": "go0", "health": h})
			devs.setHealth("go0", h)
		}
	}()

	sock := filepath.Join(*dir, *endpoint)
	os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		fatal("listen on %s: %v", sock, err)
	}
	server := grpc.NewServer()
	pb.RegisterDevicePluginServer(server, &plugin{devs: devs})
	go func() {
		if err := server.Serve(lis); err != nil {
			fatal("serve: %v", err)
		}
	}()

	// As the Kubernetes sample plugin and NVIDIA's dial kubelet: no scheme, so grpc-go takes
	// the whole path as a passthrough target and, with no unix: scheme to recognise, as the
	// :authority too.
	seen := make(chan string, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, kubelet, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", addr)
			if err != nil {
				return nil, err
			}
			return &authoritySniffer{Conn: c, seen: seen}, nil
		}))
	if err != nil {
		emit(map[string]interface{}{"event": "register-failed", "grpc": grpc.Version, "error": "dial: " + err.Error()})
		os.Exit(1)
	}
	_, err = pb.NewRegistrationClient(conn).Register(ctx, &pb.RegisterRequest{
		Version: "v1beta1", Endpoint: *endpoint, ResourceName: *resource, Options: options(),
	})
	authority := "(not seen)"
	select {
	case authority = <-seen:
	default:
	}
	conn.Close()
	if err != nil {
		emit(map[string]interface{}{"event": "register-failed", "grpc": grpc.Version, "authority": authority, "error": err.Error()})
		os.Exit(1)
	}
	emit(map[string]interface{}{"event": "registered", "grpc": grpc.Version, "authority": authority})
	select {}
}
