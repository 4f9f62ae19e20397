package config

import (
	"github.com/patientmsg/gateway/internal/redisconf"

	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
)

// The deployment examples agree with the settings table: they name no
// variable the gateway does not read, state no other default than the
// table's, give no value the gateway would refuse, and miss no setting
// where they are meant to list them all.

// others are the variables the deployment files may name that are not
// settings of the gateway.
var others = map[string]struct {
	why    string
	secret bool
}{
	"AWS_ACCESS_KEY_ID":     {"read by the AWS SDK for an s3:// BLOB_URL", true},
	"AWS_SECRET_ACCESS_KEY": {"read by the AWS SDK for an s3:// BLOB_URL", true},
	"REDIS_MAXMEMORY":       {"docker compose only: the maxmemory of its Redis", false},
}

var deployments = filepath.Join("..", "..", "deployments")

// assignment is a variable a deployment file gives a value, or shows in a
// comment (commented: the default, or an example of a setting without one).
type assignment struct {
	name, value string
	commented   bool
	where       string // file:line
}

// parseValue parses v as the setting's value over the defaults.
func parseValue(s Setting, v string) (Config, error) {
	c := NewDefaultConfig()
	if s.parse == nil {
		return c, nil
	}
	return c, s.parse(&c, v)
}

// sameValue reports whether two values of a setting mean the same ("30d"
// and "720h").
func sameValue(s Setting, a, b string) bool {
	ca, errA := parseValue(s, a)
	cb, errB := parseValue(s, b)
	return errA == nil && errB == nil && reflect.DeepEqual(ca, cb)
}

// errorf reports what a check finds wrong (t.Errorf, or a test's own
// collector when it checks the checks).
type errorf func(format string, args ...any)

// checkAssignment checks one assignment: a known name, a value that
// parses, and a commented value of a setting with a fixed default that is
// that default.
func checkAssignment(bad errorf, a assignment) {
	s, ok := settingByName(a.name)
	if !ok {
		if _, other := others[a.name]; !other {
			bad("%s: %s is not a setting of the gateway (internal/config/settings.go)", a.where, a.name)
		}
		return
	}
	if a.commented && s.Default != "" {
		if !sameValue(s, a.value, s.Default) {
			bad("%s: shows %s=%s as the default; the default is %s", a.where, a.name, a.value, s.Default)
		}
		return
	}
	if a.value != "" {
		if _, err := parseValue(s, a.value); err != nil {
			bad("%s: %s=%q would stop the gateway: %v", a.where, a.name, a.value, err)
		}
	}
}

// readAssignments reads the lines of path matching re (groups: the
// comment mark, the name, the value).
func readAssignments(t *testing.T, path string, re *regexp.Regexp) []assignment {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []assignment
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			v := strings.TrimSpace(m[3])
			if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
				v = v[1 : len(v)-1]
			}
			out = append(out, assignment{name: m[2], value: v, commented: m[1] != "",
				where: filepath.Base(path) + ":" + strconv.Itoa(n)})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	envLine  = regexp.MustCompile(`^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$`)
	yamlLine = regexp.MustCompile(`^\s*(#\s*)?([A-Z][A-Z0-9_]*):\s*(.*?)\s*$`)
)

// exampleEnv reads gateway.env.example: every assignment, and the values
// of the lines not commented out (what a copy of it as .env sets).
func exampleEnv(t *testing.T) (all []assignment, active map[string]string) {
	t.Helper()
	all = readAssignments(t, filepath.Join(deployments, "gateway.env.example"), envLine)
	active = map[string]string{}
	for _, a := range all {
		if !a.commented {
			if _, twice := active[a.name]; twice {
				t.Errorf("%s: %s is set twice", a.where, a.name)
			}
			active[a.name] = a.value
		}
	}
	return all, active
}

// checkComposeEnvironment checks what a compose file sets in the gateway's
// environment (compose) against the settings and the example .env (active:

// composeFile loads a compose file of deployments/ with compose-go, as
// docker compose does when deployments/.env holds env: env interpolates the
// file, and each service's env_file .env gives it env. The .env the test
// writes is one of its own: a .env of a developer's in deployments/ is not read.
func composeFile(t *testing.T, file string, env map[string]string) *composetypes.Project {
	t.Helper()
	dir, err := filepath.Abs(deployments)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if strings.Contains(env[k], "'") {
			t.Fatalf("%s=%q: the test cannot quote it for .env", k, env[k])
		}
		fmt.Fprintf(&b, "%s='%s'\n", k, env[k]) // single quotes: no interpolation of $
	}
	dotenv := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(dotenv, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), composetypes.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []composetypes.ConfigFile{{Filename: filepath.Join(dir, file)}},
		Environment: composetypes.Mapping(maps.Clone(env)),
	}, func(o *loader.Options) {
		o.SetProjectName("gateway", true)
		o.SkipResolveEnvironment = true // after env_file is pointed at the test's .env
	})
	if err != nil {
		t.Fatalf("%s: docker compose would refuse it: %v", file, err)
	}
	for name, s := range p.Services {
		for i, f := range s.EnvFiles {
			if f.Path != filepath.Join(dir, ".env") {
				t.Errorf("%s: service %s reads env_file %s; the deployment guide has the operator fill in .env beside it", file, name, f.Path)
				continue
			}
			s.EnvFiles[i].Path = dotenv
		}
		p.Services[name] = s
	}
	if p, err = p.WithServicesEnvironmentResolved(true); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return p
}

// gatewayRoles are the gateway's commands and the roles they run.
var gatewayRoles = map[string]Role{"serve": RoleAPI, "worker": RoleWorker, "all": RoleAll}

// gatewayServices are the services of a compose project that run the
// gateway, with their environment and role.
func gatewayServices(p *composetypes.Project) (env map[string]map[string]string, role map[string]Role) {
	env, role = map[string]map[string]string{}, map[string]Role{}
	for name, s := range p.Services {
		if len(s.Command) == 0 {
			continue
		}
		r, ok := gatewayRoles[s.Command[0]]
		if !ok {
			continue
		}
		env[name], role[name] = map[string]string{}, r
		for k, v := range s.Environment {
			if v != nil {
				env[name][k] = *v
			}
		}
	}
	return env, role
}

// probeValue is what a probing .env sets name to.
func probeValue(name string) string { return "probe-" + name }

// checkComposeFile loads a compose file with .env a copy of
// gateway.env.example (active: its values) and checks what every gateway
// service is given: settings, values they take, fallbacks that are the
// defaults, a configuration the gateway starts with. A second load, with a
// .env that sets every setting to a value of its own, tells the settings
// the file fixes (a value of its own, whatever .env says) from those .env
// reaches the gateway with: every other setting must reach it.
func checkComposeFile(t *testing.T, file string, active map[string]string) (env map[string]map[string]string, fixed map[string]bool) {
	t.Helper()
	env, role := gatewayServices(composeFile(t, file, active))
	if len(env) == 0 {
		t.Fatalf("%s: no service runs the gateway (command serve, worker or all)", file)
	}
	probe := map[string]string{}
	for _, s := range settings {
		probe[s.Name] = probeValue(s.Name)
	}
	for name := range others {
		probe[name] = probeValue(name)
	}
	probed, _ := gatewayServices(composeFile(t, file, probe))

	fixed = map[string]bool{}
	for _, svc := range slices.Sorted(maps.Keys(env)) {
		for _, name := range slices.Sorted(maps.Keys(env[svc])) {
			v, where := env[svc][name], file+": "+svc+": "+name
			switch pv, fromEnv := probed[svc][name]; {
			case pv == probeValue(name):
				// From .env; where .env leaves it empty or out, the value is
				// the file's fallback (${NAME:-fallback}), which must be the
				// default.
				a, listed := active[name]
				checkAssignment(t.Errorf, assignment{name: name, value: v, commented: !listed || a != v, where: where})
			case fromEnv && strings.HasPrefix(pv, "probe-"):
				t.Errorf("%s is set from %s of .env: from .env it should come under its own name", where, strings.TrimPrefix(pv, "probe-"))
			default:
				fixed[name] = true
				checkAssignment(t.Errorf, assignment{name: name, value: v, where: where})
			}
		}
		for _, name := range slices.Sorted(maps.Keys(probe)) {
			if _, ok := probed[svc][name]; !ok {
				t.Errorf("%s: %s set in .env does not reach service %s (env_file)", file, name, svc)
			}
		}
		c, err := Load(func(k string) string { return env[svc][k] })
		if err == nil {
			err = c.Validate(role[svc])
		}
		if err != nil {
			t.Errorf("%s: service %s would not start with .env a copy of gateway.env.example: %v", file, svc, err)
		}
	}
	return env, fixed
}

func TestTheComposeFilesAgreeWithTheSettings(t *testing.T) {
	example, active := exampleEnv(t)
	listed := map[string]bool{}
	for _, a := range example {
		checkAssignment(t.Errorf, a)
		listed[a.name] = true
	}

	// fixed are the settings docker-compose.yml sets to a value of its
	// own: one in .env would be ignored.
	_, fixed := checkComposeFile(t, "docker-compose.yml", active)
	for _, s := range settings {
		switch {
		case fixed[s.Name] && listed[s.Name]:
			t.Errorf("gateway.env.example lists %s, which docker-compose.yml sets itself: the .env value would be ignored", s.Name)
		case !fixed[s.Name] && !listed[s.Name] && s.Name != "GATEWAY_CONFIG_FILE":
			t.Errorf("gateway.env.example does not list %s (%s)", s.Name, s.Group)
		}
	}
}

// checkRedisSettings checks that a Redis node's configuration sets each
// of redisconf.Settings, once, to the value the gateway is sized for.
func checkRedisSettings(t *testing.T, where, config string) {
	t.Helper()
	for _, rs := range redisconf.Settings {
		if v := directive(config, rs.Name); len(v) != 1 || v[0] != rs.Value {
			t.Errorf("%s: %s %v; want %s, once (%s otherwise)", where, rs.Name, v, rs.Value, rs.Why)
		}
	}
}

func TestTheSingleRedisOfDockerComposeHasTheSettingsTheGatewayIsSizedFor(t *testing.T) {
	_, active := exampleEnv(t)
	p := composeFile(t, "docker-compose.yml", active)
	svc, err := p.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	checkRedisSettings(t, "docker-compose.yml: redis", strings.Join(svc.Command, " "))
}

// The replicated topologies, docker-compose.replicated.yml and the
// kubernetes-replicated overlay, stay writable through one failure and
// refuse writes on a primary cut off from the others (docs/failover.md)
// only if every data node is fenced (min-replicas-to-write) and keeps an
// AOF, three sentinels with a quorum of two watch the master the gateway
// asks them for, and every gateway process finds it through all three and
// waits for a replica that exists.

// redisNode is a data node or a sentinel: its name, and the text of its
// configuration (a command line, or a file and the script that starts it).
type redisNode struct{ name, config string }

// topology is what a replicated deployment describes.
type topology struct {
	file      string
	data      []redisNode
	sentinels []redisNode
	// dataHosts are the names the sentinels and the replicas reach the
	// data nodes by; placeholders are the other words a sentinel's monitor
	// line may give the primary as (filled in when it starts).
	dataHosts, placeholders []string
	// sentinelAddrs are the sentinels' host:port, as the gateway reaches them.
	sentinelAddrs []string
	// gateway is each gateway process's environment, by name.
	gateway map[string]map[string]string
}

// directive returns the first word after each occurrence of a Redis
// configuration directive in text: a line of a file ("name value"), an
// option of a command line ("--name value"), or a quoted line a script
// writes ('name value').
func directive(text, name string) []string {
	re := regexp.MustCompile(`(?m)(?:^[ \t]*|--|['"])` + regexp.QuoteMeta(name) + `[ \t]+"?([^\s"'\\]+)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

var sentinelMonitor = regexp.MustCompile(`(?m)(?:^[ \t]*|['"])sentinel[ \t]+monitor[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\d+)[ \t]+(\d+)\b`)

// checkTopology checks what every replicated deployment must hold.
func checkTopology(t *testing.T, top topology) {
	t.Helper()
	// (a) Every data node, since any may be promoted: the fence, and an AOF.
	if len(top.data) != 3 {
		t.Errorf("%s: %d data nodes; want 3, a primary and two replicas (with one down, writes go on)", top.file, len(top.data))
	}
	for _, n := range top.data {
		where := top.file + ": data node " + n.name
		if v := directive(n.config, "appendonly"); len(v) != 1 || v[0] != "yes" {
			t.Errorf("%s: appendonly %v; want yes, once", where, v)
		}
		if v := directive(n.config, "maxmemory-policy"); len(v) != 1 || v[0] != "noeviction" {
			t.Errorf("%s: maxmemory-policy %v; want noeviction, once", where, v)
		}
		fences := directive(n.config, "min-replicas-to-write")
		if len(fences) != 1 {
			t.Errorf("%s: min-replicas-to-write %v; want it once: without it a primary cut off from its replicas takes writes a failover discards", where, fences)
		}
		for _, v := range fences {
			if k, err := strconv.Atoi(v); err != nil || k < 1 || k > len(top.data)-2 {
				t.Errorf("%s: min-replicas-to-write %s; want at least 1, and at most %d so that writes go on with one replica down", where, v, len(top.data)-2)
			}
		}
		if v := directive(n.config, "min-replicas-max-lag"); len(v) != 1 || v[0] == "0" {
			t.Errorf("%s: min-replicas-max-lag %v; want it once, above 0", where, v)
		}
		checkRedisSettings(t, where, n.config)
		if v := directive(n.config, "replica-announce-ip"); len(v) == 0 {
			t.Errorf("%s: no replica-announce-ip: the sentinels reach a replica by the name it announces", where)
		}
	}

	// (b) Three sentinels, a quorum of two, all on the master the gateway asks for.
	if len(top.sentinels) != 3 {
		t.Errorf("%s: %d sentinels; want 3 (with one down, two still agree on a failover)", top.file, len(top.sentinels))
	}
	masters := map[string]bool{}
	for _, n := range top.sentinels {
		where := top.file + ": sentinel " + n.name
		monitors := sentinelMonitor.FindAllStringSubmatch(n.config, -1)
		if len(monitors) != 1 {
			t.Errorf("%s: %d sentinel monitor lines; want 1", where, len(monitors))
			continue
		}
		m := monitors[0]
		master, host, port, quorum := m[1], m[2], m[3], m[4]
		masters[master] = true
		if quorum != "2" {
			t.Errorf("%s: quorum %s; want 2 of the 3 sentinels", where, quorum)
		}
		if !slices.Contains(top.dataHosts, host) && !slices.Contains(top.placeholders, host) {
			t.Errorf("%s: monitors %s, which is none of the data nodes %v", where, host, top.dataHosts)
		}
		if port != "6379" {
			t.Errorf("%s: monitors port %s; the data nodes listen on 6379", where, port)
		}
		for _, d := range []string{"down-after-milliseconds", "failover-timeout"} {
			if v := directive(n.config, "sentinel "+d+" "+master); len(v) != 1 {
				t.Errorf("%s: sentinel %s %s %v; want it once", where, d, master, v)
			} else if ms, err := strconv.Atoi(v[0]); err != nil || ms < 1000 {
				t.Errorf("%s: sentinel %s %s %s; want milliseconds, at least 1000", where, d, master, v[0])
			} else if d == "down-after-milliseconds" && ms > 30000 {
				t.Errorf("%s: sentinel down-after-milliseconds %s %d: a dead primary would go unnoticed for that long", where, master, ms)
			}
		}
		for _, d := range []string{"sentinel resolve-hostnames", "sentinel announce-hostnames"} {
			if v := directive(n.config, d); len(v) != 1 || v[0] != "yes" {
				t.Errorf("%s: %s %v; want yes (the nodes are named, not numbered)", where, d, v)
			}
		}
	}

	// (c) Every gateway process: the sentinels, all three, that master, and
	// a wait for a replica that exists.
	if len(top.gateway) == 0 {
		t.Fatalf("%s: no gateway process found", top.file)
	}
	for name, env := range top.gateway {
		where := top.file + ": " + name
		c, err := Load(func(k string) string { return env[k] })
		if err == nil {
			err = c.Validate(RoleAll)
		}
		if err != nil {
			t.Errorf("%s: the gateway would not start: %v", where, err)
			continue
		}
		if c.RedisSentinelMaster == "" || !masters[c.RedisSentinelMaster] || len(masters) != 1 {
			t.Errorf("%s: REDIS_SENTINEL_MASTER=%q; the sentinels monitor %v", where, c.RedisSentinelMaster, slices.Sorted(maps.Keys(masters)))
		}
		if got, want := slices.Sorted(slices.Values(c.RedisSentinelAddrs)), slices.Sorted(slices.Values(top.sentinelAddrs)); !slices.Equal(got, want) {
			t.Errorf("%s: REDIS_SENTINEL_ADDRS=%v; want every sentinel once, %v", where, got, want)
		}
		if n := c.Replication.MinReplicasAck; n < 1 || n > len(top.data)-1 {
			t.Errorf("%s: REDIS_MIN_REPLICAS_ACK=%d; want 1 to %d (the replicas): 0 loses messages acknowledged before a failover, more than the replicas refuses every write", where, n, len(top.data)-1)
		}
	}
}

func TestTheReplicatedComposeFileFencesAndWaitsForAReplica(t *testing.T) {
	const file = "docker-compose.replicated.yml"
	_, active := exampleEnv(t)
	p := composeFile(t, file, active)

	// (d) What the gateway is given: settings with values it takes, as in
	// docker-compose.yml but for the Redis settings.
	env, _ := checkComposeFile(t, file, active)
	single, _ := gatewayServices(composeFile(t, "docker-compose.yml", active))
	for _, svc := range slices.Sorted(maps.Keys(env)) {
		for _, name := range slices.Sorted(maps.Keys(env[svc])) {
			if v, w := env[svc][name], single[svc][name]; !strings.HasPrefix(name, "REDIS_") && v != w {
				t.Errorf("%s gives %s %s=%q, docker-compose.yml %q: they should differ in Redis only", file, svc, name, v, w)
			}
		}
		for name := range single[svc] {
			if _, ok := env[svc][name]; !ok && !strings.HasPrefix(name, "REDIS_") {
				t.Errorf("%s does not give %s %s, which docker-compose.yml does", file, svc, name)
			}
		}
	}

	top := topology{file: file, gateway: env}
	var sentinelNames []string
	isSentinel := regexp.MustCompile(`--sentinel\b|\bredis-sentinel\b`)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		text := strings.Join(s.Command, " ")
		switch {
		case strings.HasPrefix(s.Image, "redis:") && isSentinel.MatchString(text):
			top.sentinels = append(top.sentinels, redisNode{name, text})
			port := "26379"
			if p := directive(text, "port"); len(p) == 1 {
				port = p[0]
			}
			top.sentinelAddrs = append(top.sentinelAddrs, name+":"+port)
			sentinelNames = append(sentinelNames, name)
		case strings.HasPrefix(s.Image, "redis:"):
			top.data = append(top.data, redisNode{name, text})
			top.dataHosts = append(top.dataHosts, name)
		}
	}
	if env["serve"] == nil || env["worker"] == nil {
		t.Errorf("%s: want a serve and a worker service; found %v", file, slices.Sorted(maps.Keys(env)))
	}
	for name := range env {
		for _, sen := range sentinelNames {
			if _, ok := p.Services[name].DependsOn[sen]; !ok {
				t.Errorf("%s: %s does not wait for %s (depends_on)", file, name, sen)
			}
		}
	}
	// A data node asks every sentinel for the current primary as it starts,
	// so that one restarted after a failover rejoins as a replica.
	for _, n := range top.data {
		for _, sen := range sentinelNames {
			if !strings.Contains(n.config, sen) {
				t.Errorf("%s: data node %s does not ask %s for the current primary", file, n.name, sen)
			}
		}
	}
	checkTopology(t, top)
}
