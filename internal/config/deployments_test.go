package config

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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

// composeEnvironment is what docker-compose.yml sets in the gateway's
// environment, on top of .env (env_file).
func composeEnvironment(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployments, "docker-compose.yml"))
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
		t.Fatal("docker-compose.yml sets no environment: is the test reading the right thing?")
	}
	return env
}

func TestTheComposeFilesAgreeWithTheSettings(t *testing.T) {
	compose := composeEnvironment(t)
	example := readAssignments(t, filepath.Join(deployments, "gateway.env.example"), envLine)

	active, listed := map[string]string{}, map[string]bool{}
	for _, a := range example {
		checkAssignment(t, a)
		listed[a.name] = true
		if !a.commented {
			if _, twice := active[a.name]; twice {
				t.Errorf("%s: %s is set twice", a.where, a.name)
			}
			active[a.name] = a.value
		}
	}

	// fixed are the settings docker-compose.yml sets to a value of its
	// own: one in .env would be ignored.
	fixed := map[string]bool{}
	for name, v := range compose {
		where := "docker-compose.yml: " + name
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
				t.Errorf("%s is required by docker-compose.yml but gateway.env.example gives it no value", name)
			}
		}
	}

	for _, s := range settings {
		switch {
		case fixed[s.Name] && listed[s.Name]:
			t.Errorf("gateway.env.example lists %s, which docker-compose.yml sets itself: the .env value would be ignored", s.Name)
		case !fixed[s.Name] && !listed[s.Name] && s.Name != "GATEWAY_CONFIG_FILE":
			t.Errorf("gateway.env.example does not list %s (%s)", s.Name, s.Group)
		}
	}
}

// manifest reads the data of a ConfigMap or the stringData of a Secret,
// and the settings its comments show.
func manifest(t *testing.T, file, key string) (values map[string]string, commented []assignment) {
	t.Helper()
	path := filepath.Join(deployments, "kubernetes", file)
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
