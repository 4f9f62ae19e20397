package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
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

// checkAssignment checks one assignment: a known name, a value that
// parses, and a commented value of a setting with a fixed default that is
// that default.
func checkAssignment(t *testing.T, a assignment) {
	t.Helper()
	s, ok := settingByName(a.name)
	if !ok {
		if _, other := others[a.name]; !other {
			t.Errorf("%s: %s is not a setting of the gateway (internal/config/settings.go)", a.where, a.name)
		}
		return
	}
	if a.commented && s.Default != "" {
		if !sameValue(s, a.value, s.Default) {
			t.Errorf("%s: shows %s=%s as the default; the default is %s", a.where, a.name, a.value, s.Default)
		}
		return
	}
	if a.value != "" {
		if _, err := parseValue(s, a.value); err != nil {
			t.Errorf("%s: %s=%q would stop the gateway: %v", a.where, a.name, a.value, err)
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
	interp   = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?\}$`)
)

// composeEnvironment is what a compose file sets in the gateway's
// environment, on top of .env (env_file).
func composeEnvironment(t *testing.T, file string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployments, file))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Gateway struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"x-gateway"`
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range doc.Gateway.Environment {
		env[k] = v
	}
	for _, svc := range doc.Services {
		for k, v := range svc.Environment {
			env[k] = v
		}
	}
	if len(env) == 0 {
		t.Fatalf("%s sets no environment: is the test reading the right thing?", file)
	}
	return env
}

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
// its values), and returns the settings the file fixes: a value of its own,
// not one from .env.
func checkComposeEnvironment(t *testing.T, file string, compose, active map[string]string) (fixed map[string]bool) {
	t.Helper()
	fixed = map[string]bool{}
	for name, v := range compose {
		where := file + ": " + name
		m := interp.FindStringSubmatch(v)
		if m == nil {
			fixed[name] = true
			checkAssignment(t, assignment{name: name, value: v, where: where})
			continue
		}
		if m[1] != name {
			t.Errorf("%s is set from ${%s}: from .env it should come under its own name", where, m[1])
			continue
		}
		switch op := strings.TrimPrefix(m[2], ":"); op {
		case "-": // ${NAME:-fallback}: the fallback applies when .env leaves it empty
			s, ok := settingByName(name)
			if ok && s.Default != "" {
				checkAssignment(t, assignment{name: name, value: m[3], commented: true, where: where + " (its fallback)"})
			} else {
				checkAssignment(t, assignment{name: name, value: m[3], where: where + " (its fallback)"})
			}
		case "?": // ${NAME:?message}: compose refuses to start without it
			if active[name] == "" {
				t.Errorf("%s is required by %s but gateway.env.example gives it no value", name, file)
			}
		}
	}
	return fixed
}

// composeProcessEnv is the environment compose gives the gateway when .env
// is a copy of gateway.env.example (active: its values): .env under what
// the file sets, interpolated as compose does.
func composeProcessEnv(active, compose map[string]string) map[string]string {
	env := map[string]string{}
	for k, v := range active {
		env[k] = v
	}
	for name, v := range compose {
		if m := interp.FindStringSubmatch(v); m != nil {
			v = active[m[1]]
			if v == "" && strings.TrimPrefix(m[2], ":") == "-" {
				v = m[3]
			}
		}
		env[name] = v
	}
	return env
}

func TestTheComposeFilesAgreeWithTheSettings(t *testing.T) {
	compose := composeEnvironment(t, "docker-compose.yml")
	example, active := exampleEnv(t)

	listed := map[string]bool{}
	for _, a := range example {
		checkAssignment(t, a)
		listed[a.name] = true
	}

	// fixed are the settings docker-compose.yml sets to a value of its
	// own: one in .env would be ignored.
	fixed := checkComposeEnvironment(t, "docker-compose.yml", compose, active)

	for _, s := range settings {
		switch {
		case fixed[s.Name] && listed[s.Name]:
			t.Errorf("gateway.env.example lists %s, which docker-compose.yml sets itself: the .env value would be ignored", s.Name)
		case !fixed[s.Name] && !listed[s.Name] && s.Name != "GATEWAY_CONFIG_FILE":
			t.Errorf("gateway.env.example does not list %s (%s)", s.Name, s.Group)
		}
	}
}

// manifest reads the data of a ConfigMap or the stringData of a Secret
// in kubernetes/, and the settings its comments show.
func manifest(t *testing.T, file, key string) (values map[string]string, commented []assignment) {
	t.Helper()
	return manifestIn(t, "kubernetes", file, key)
}

// manifestIn is manifest for a file in another directory of deployments/.
func manifestIn(t *testing.T, dir, file, key string) (values map[string]string, commented []assignment) {
	t.Helper()
	path := filepath.Join(deployments, dir, file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	data, _ := doc[key].(map[string]any)
	if len(data) == 0 {
		t.Fatalf("%s has no %s", file, key)
	}
	values = map[string]string{}
	for k, v := range data {
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s: %s is not a string (quote it)", file, k)
		}
		values[k] = s
	}
	for _, a := range readAssignments(t, path, yamlLine) {
		if a.commented {
			commented = append(commented, a)
		}
	}
	return values, commented
}

func TestTheKubernetesManifestsAgreeWithTheSettings(t *testing.T) {
	cm, cmComments := manifest(t, "configmap.yaml", "data")
	secret, secretComments := manifest(t, "secret.example.yaml", "stringData")

	isSecret := func(name string) bool {
		if s, ok := settingByName(name); ok {
			return s.Secret
		}
		return others[name].secret
	}
	inSecret := map[string]bool{}
	for name, v := range secret {
		checkAssignment(t, assignment{name: name, value: v, where: "secret.example.yaml: " + name})
		inSecret[name] = true
		if _, both := cm[name]; both {
			t.Errorf("%s is in both the ConfigMap and the Secret", name)
		}
	}
	for _, a := range secretComments {
		checkAssignment(t, a)
		inSecret[a.name] = true
	}
	for name, v := range cm {
		checkAssignment(t, assignment{name: name, value: v, where: "configmap.yaml: " + name})
		if isSecret(name) {
			t.Errorf("configmap.yaml holds %s, a secret: it belongs in the Secret", name)
		}
	}
	for _, a := range cmComments {
		checkAssignment(t, a)
		if isSecret(a.name) {
			t.Errorf("%s: shows %s, a secret, in the ConfigMap: it belongs in the Secret", a.where, a.name)
		}
	}
	for _, s := range settings {
		_, inConfig := cm[s.Name]
		_, setInSecret := secret[s.Name]
		if s.Required != 0 && !inConfig && !setInSecret {
			t.Errorf("neither the ConfigMap nor the Secret sets %s, which the gateway needs", s.Name)
		}
		if s.Secret && !inSecret[s.Name] {
			t.Errorf("secret.example.yaml does not show %s, a secret setting", s.Name)
		}
	}

	// The Deployments take the environment from the two (envFrom); a
	// variable set on a container must be a setting too.
	for _, file := range []string{"api.yaml", "worker.yaml"} {
		raw, err := os.ReadFile(filepath.Join(deployments, "kubernetes", file))
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct {
								Name  string `yaml:"name"`
								Value string `yaml:"value"`
							} `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				checkAssignment(t, assignment{name: e.Name, value: e.Value, where: file + ": " + e.Name})
				if isSecret(e.Name) && e.Value != "" {
					t.Errorf("%s sets %s, a secret, in clear: take it from the Secret", file, e.Name)
				}
			}
		}
	}
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
	raw, err := os.ReadFile(filepath.Join(deployments, file))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]any    `yaml:"depends_on"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}

	// (d) What the gateway is given: settings with values it takes, as in
	// docker-compose.yml but for the Redis settings.
	compose := composeEnvironment(t, file)
	_, active := exampleEnv(t)
	checkComposeEnvironment(t, file, compose, active)
	single := composeEnvironment(t, "docker-compose.yml")
	for _, name := range slices.Sorted(maps.Keys(compose)) {
		if !strings.HasPrefix(name, "REDIS_") && compose[name] != single[name] {
			t.Errorf("%s sets %s=%q, docker-compose.yml %q: they should differ in Redis only", file, name, compose[name], single[name])
		}
	}
	for name := range single {
		if _, ok := compose[name]; !ok && !strings.HasPrefix(name, "REDIS_") {
			t.Errorf("%s does not set %s, which docker-compose.yml does", file, name)
		}
	}

	top := topology{file: file, gateway: map[string]map[string]string{}}
	var sentinelNames []string
	isSentinel := regexp.MustCompile(`--sentinel\b|\bredis-sentinel\b`)
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		s := doc.Services[name]
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
		case len(s.Command) > 0 && slices.Contains([]string{"serve", "worker", "all"}, s.Command[0]):
			top.gateway[name] = composeProcessEnv(active, s.Environment)
		}
	}
	if top.gateway["serve"] == nil || top.gateway["worker"] == nil {
		t.Errorf("%s: want a serve and a worker service; found %v", file, slices.Sorted(maps.Keys(top.gateway)))
	}
	for name := range top.gateway {
		for _, sen := range sentinelNames {
			if _, ok := doc.Services[name].DependsOn[sen]; !ok {
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

// k8sObject is what the tests read of a Kubernetes object.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		// StatefulSet
		ServiceName string `yaml:"serviceName"`
		Replicas    int    `yaml:"replicas"`
		Template    struct {
			Spec struct {
				Containers []struct {
					Name         string   `yaml:"name"`
					Command      []string `yaml:"command"`
					Args         []string `yaml:"args"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
		Ports                    []struct {
			Port int `yaml:"port"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// k8sObjects reads every object of a file of kubernetes-replicated/.
func k8sObjects(t *testing.T, file string) []k8sObject {
	t.Helper()
	f, err := os.Open(filepath.Join(deployments, "kubernetes-replicated", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []k8sObject
	dec := yaml.NewDecoder(f)
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, o)
	}
}

func TestTheReplicatedKubernetesOverlayFencesAndWaitsForAReplica(t *testing.T) {
	const dir = "kubernetes-replicated"
	raw, err := os.ReadFile(filepath.Join(deployments, dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
		Patches   []struct {
			Path string `yaml:"path"`
		} `yaml:"patches"`
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kust.Resources, "../kubernetes") {
		t.Errorf("%s/kustomization.yaml does not build on ../kubernetes (resources %v)", dir, kust.Resources)
	}

	// The gateway's environment: the base ConfigMap and Secret, and the
	// overlay's patch of the ConfigMap.
	env, _ := manifest(t, "configmap.yaml", "data")
	secret, _ := manifest(t, "secret.example.yaml", "stringData")
	for k, v := range secret {
		env[k] = v
	}
	patched := false
	for _, p := range kust.Patches {
		for _, o := range k8sObjects(t, p.Path) {
			if o.Kind != "ConfigMap" || o.Metadata.Name != "gateway-config" {
				continue
			}
			patched = true
			// (d) Settings the gateway takes, none of them secret.
			values, commented := manifestIn(t, dir, p.Path, "data")
			for _, name := range slices.Sorted(maps.Keys(values)) {
				checkAssignment(t, assignment{name: name, value: values[name], where: p.Path + ": " + name})
				if s, ok := settingByName(name); ok && s.Secret {
					t.Errorf("%s holds %s, a secret: it belongs in the Secret", p.Path, name)
				}
				env[name] = values[name]
			}
			for _, a := range commented {
				checkAssignment(t, a)
			}
		}
	}
	if !patched {
		t.Fatalf("%s/kustomization.yaml patches no ConfigMap gateway-config: the gateway would not know the sentinels", dir)
	}

	top := topology{file: dir, gateway: map[string]map[string]string{
		// api.yaml and worker.yaml take it all from the ConfigMap and the Secret (envFrom).
		"gateway-api": env, "gateway-worker": env,
	}}
	var objects []k8sObject
	for _, r := range kust.Resources {
		if !strings.HasPrefix(r, "..") {
			objects = append(objects, k8sObjects(t, r)...)
		}
	}
	configMaps := map[string]map[string]string{}
	services := map[string]k8sObject{}
	for _, o := range objects {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o.Data
		case "Service":
			services[o.Metadata.Name] = o
		}
	}
	for _, o := range objects {
		if o.Kind != "StatefulSet" {
			continue
		}
		sts, pod := o.Metadata.Name, o.Spec.Template.Spec
		svc, ok := services[o.Spec.ServiceName]
		if !ok || svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("%s: StatefulSet %s: want a headless Service %q that publishes pods not yet ready (they find each other by name while starting)", dir, sts, o.Spec.ServiceName)
		}
		var hosts []string
		for i := range o.Spec.Replicas {
			hosts = append(hosts, fmt.Sprintf("%s-%d.%s", sts, i, o.Spec.ServiceName))
		}
		configs := map[string]string{} // volume → ConfigMap
		for _, v := range pod.Volumes {
			if v.ConfigMap.Name != "" {
				configs[v.Name] = v.ConfigMap.Name
			}
		}
		for _, c := range pod.Containers {
			command := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
			// The container's configuration: the ConfigMap it mounts,
			// files named by where it is mounted.
			files := map[string]string{}
			for _, m := range c.VolumeMounts {
				for k, v := range configMaps[configs[m.Name]] {
					files[m.MountPath+"/"+k] = v
				}
			}
			script := ""
			for path, text := range files {
				if strings.Contains(command, path) {
					script = text
				}
			}
			if script == "" {
				t.Errorf("%s: container %s of %s runs no script of its ConfigMap (%s)", dir, c.Name, sts, command)
				continue
			}
			if regexp.MustCompile(`\bsentinel\b`).MatchString(command) {
				var conf string
				for path, text := range files {
					if strings.Contains(script, path) && sentinelMonitor.MatchString(text) {
						conf = text
					}
				}
				port := "26379"
				if p := directive(conf, "port"); len(p) == 1 {
					port = p[0]
				}
				for i, h := range hosts {
					top.sentinels = append(top.sentinels, redisNode{fmt.Sprintf("%s-%d/%s", sts, i, c.Name), conf})
					top.sentinelAddrs = append(top.sentinelAddrs, h+":"+port)
				}
				// The script fills in the primary of the monitor line.
				if m := sentinelMonitor.FindStringSubmatch(conf); m != nil && strings.Contains(script, "s/"+m[2]+"/") {
					top.placeholders = append(top.placeholders, m[2])
				}
				continue
			}
			var conf string
			for path, text := range files {
				if regexp.MustCompile(`redis-server\s+` + regexp.QuoteMeta(path) + `\b`).MatchString(script) {
					conf = text
				}
			}
			if conf == "" {
				t.Errorf("%s: the script of container %s of %s starts redis-server with no file of its ConfigMap", dir, c.Name, sts)
			}
			for i := range hosts {
				top.data = append(top.data, redisNode{fmt.Sprintf("%s-%d/%s", sts, i, c.Name), conf + "\n" + script})
			}
			top.dataHosts = append(top.dataHosts, hosts...)
			// The script knows every data node, to ask for the current primary.
			var listed []string
			if m := regexp.MustCompile(`(?m)^\s*nodes="([^"]*)"`).FindStringSubmatch(script); m != nil {
				listed = strings.Fields(m[1])
			}
			if !slices.Equal(listed, hosts) {
				t.Errorf("%s: the script of %s lists the data nodes (nodes=) as %v; want %v", dir, sts, listed, hosts)
			}
		}
	}
	checkTopology(t, top)
}
