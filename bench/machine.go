package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machineInfo is where a run happened, as the report states it: an
// outsider's first question about any benchmark.
type machineInfo struct {
	cpu     string // model name from /proc/cpuinfo
	cores   int
	memory  string // e.g. "24 GiB"
	virtual string // how the CPU and the system say they are virtualised, or ""
	kernel  string

	redisVersion string
	redisAddr    string
	// redisPrivate is true when the bench started its own redis-server
	// (REDIS_URL unset).
	redisPrivate bool
	// persistence is what CONFIG GET says of RDB snapshots and the AOF, or
	// why it could not be read.
	persistence string
	// replicated says where the contenders that need a primary with a
	// replica ran, or is empty when none did.
	replicated string

	// loadStart and loadEnd are the load averages (1, 5 and 15 minutes)
	// when the run started and ended: how busy the machine was besides.
	loadStart, loadEnd string
}

// loadAverage is /proc/loadavg's first three fields, or "".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return ""
	}
	return strings.Join(fields[:3], " ")
}

func readMachine(ctx context.Context, e *env, loadStart string) machineInfo {
	m := machineInfo{cpu: "unknown CPU", cores: runtime.NumCPU(), redisVersion: "?", redisAddr: e.opt.Addr, redisPrivate: e.private,
		loadStart: loadStart, loadEnd: loadAverage()}
	var hypervisor bool
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			key, value, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(key) {
			case "model name":
				if m.cpu == "unknown CPU" {
					m.cpu = strings.TrimSpace(value)
				}
			case "flags":
				hypervisor = hypervisor || strings.Contains(" "+value+" ", " hypervisor ")
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				m.memory = fmt.Sprintf("%.0f GiB", kb/(1<<20))
			}
		}
	}
	var virt []string
	if hypervisor {
		virt = append(virt, "a virtual machine (the CPU reports a hypervisor)")
	}
	if _, err := os.Stat("/.dockerenv"); err == nil {
		virt = append(virt, "in a container")
	}
	m.virtual = strings.Join(virt, ", ")
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(data))
	}

	if info, err := e.admin.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
				m.redisVersion = v
			}
		}
	}
	save, err1 := e.admin.ConfigGet(ctx, "save").Result()
	aof, err2 := e.admin.ConfigGet(ctx, "appendonly").Result()
	switch {
	case err1 != nil || err2 != nil:
		m.persistence = "persistence settings unknown (CONFIG GET refused)"
	case save["save"] == "" && aof["appendonly"] == "no":
		m.persistence = "persistence off (no RDB snapshots, no AOF)"
	default:
		m.persistence = fmt.Sprintf("persistence on (save %q, appendonly %s)", save["save"], aof["appendonly"])
	}
	return m
}

// markdown is the machine section's list.
func (m machineInfo) markdown() string {
	var b strings.Builder
	virtual := m.virtual
	if virtual == "" {
		virtual = "no virtualisation detected"
	}
	fmt.Fprintf(&b, "- **Machine**: %s, %d cores, %s of memory; %s; Linux %s.\n", m.cpu, m.cores, m.memory, virtual, m.kernel)
	if m.loadStart != "" && m.loadEnd != "" {
		fmt.Fprintf(&b, "- **Load average** (1, 5, 15 minutes): %s when the run started, %s when it ended; with %d cores, more than %d means other work was waiting for them too.\n", m.loadStart, m.loadEnd, m.cores, m.cores)
	}
	fmt.Fprintf(&b, "- **Go**: %s, %s/%s, GOMAXPROCS %d.\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	where := fmt.Sprintf("Redis %s at %s (`REDIS_URL`): %s", m.redisVersion, m.redisAddr, m.persistence)
	if m.redisPrivate {
		where = fmt.Sprintf("Redis %s, a private `redis-server` the bench started on loopback (%s) and nothing else used: %s, default settings otherwise", m.redisVersion, m.redisAddr, m.persistence)
	}
	fmt.Fprintf(&b, "- **Redis**: %s. It runs on the same cores as the clients, so every rate includes Redis' own CPU time; loopback hides network latency, which the round trips per message (in the tables) show instead.\n", where)
	if m.replicated != "" {
		fmt.Fprintf(&b, "- **Redis with a replica** (the `WaitReplicas` contenders): %s.\n", m.replicated)
	}
	return b.String()
}
