// cnitool: a minimal CNI runtime on Debian's libcni (golang-github-appc-cni-dev), used by the
// hybridnet tests and benchmarks to drive CNI plugins exactly as a container runtime does.
//
//	cnitool add|check|del <network-name> <netns-path>
//
// Environment: NETCONFPATH (conflist directory, default /etc/cni/net.d), CNI_PATH (plugin
// directories, ':'-separated), CNI_IFNAME (default eth0), CNI_ARGS ("K=V;K=V"), CAP_ARGS
// (JSON object of capability arguments, e.g. {"bandwidth":{...}}), CNI_CONTAINERID (default
// "cnitool-" + basename of the netns path), CNI_CACHE_DIR (libcni result cache).
//
// On success `add` prints the result JSON on stdout. On failure the error goes to stderr: a
// CNI error object as JSON when the plugin returned one (so callers can read its code),
// otherwise the text; the exit code is 1 (2 for usage errors).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func fail(err error) {
	// libcni wraps the plugin's error ("plugin type=... failed (add): %w"): unwrap it.
	var e *types.Error
	if errors.As(err, &e) {
		_ = json.NewEncoder(os.Stderr).Encode(e)
	} else {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del <network-name> <netns-path>")
		os.Exit(2)
	}
	cmd, netName, netns := os.Args[1], os.Args[2], os.Args[3]

	confDir := os.Getenv("NETCONFPATH")
	if confDir == "" {
		confDir = "/etc/cni/net.d"
	}
	conf, err := libcni.LoadConfList(confDir, netName)
	if err != nil {
		fail(err)
	}

	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	var capArgs map[string]interface{}
	if s := os.Getenv("CAP_ARGS"); s != "" {
		if err := json.Unmarshal([]byte(s), &capArgs); err != nil {
			fail(fmt.Errorf("CAP_ARGS is not a JSON object: %v", err))
		}
	}
	var args [][2]string
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if kv == "" {
			continue
		}
		p := strings.SplitN(kv, "=", 2)
		if len(p) != 2 {
			fail(fmt.Errorf("CNI_ARGS entry %q is not KEY=VALUE", kv))
		}
		args = append(args, [2]string{p[0], p[1]})
	}
	containerID := os.Getenv("CNI_CONTAINERID")
	if containerID == "" {
		containerID = "cnitool-" + filepath.Base(netns)
	}

	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifname,
		Args:           args,
		CapabilityArgs: capArgs,
	}
	cn := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	ctx := context.Background()

	switch cmd {
	case "add":
		res, err := cn.AddNetworkList(ctx, conf, rt)
		if err != nil {
			fail(err)
		}
		if err := res.Print(); err != nil {
			fail(err)
		}
	case "check":
		if err := cn.CheckNetworkList(ctx, conf, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cn.DelNetworkList(ctx, conf, rt); err != nil {
			fail(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q (add, check, del)\n", cmd)
		os.Exit(2)
	}
}
