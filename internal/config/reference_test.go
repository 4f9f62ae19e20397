package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the settings tables of docs/configuration.md from the settings table (go tool task docs)")

// The generated part of docs/configuration.md lies between these lines;
// the text around them is written by hand.
const (
	docBegin = "<!-- The tables below are generated from internal/config/settings.go: edit the settings there, then run `go tool task docs`. -->\n"
	docEnd   = "<!-- End of the generated tables. -->\n"
)

// renderSettings writes the settings table as the Markdown tables of
// docs/configuration.md, one section per group.
func renderSettings() string {
	var b strings.Builder
	group := ""
	for _, s := range settings {
		if s.Group != group {
			if group != "" {
				endGroup(&b, group)
			}
			group = s.Group
			fmt.Fprintf(&b, "### %s\n\n| Variable | Default | Meaning |\n|----------|---------|---------|\n", group)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.Name, docDefault(s), s.Doc)
	}
	endGroup(&b, group)
	return b.String()
}

func endGroup(b *strings.Builder, group string) {
	b.WriteString("\n")
	if note := groupNotes[group]; note != "" {
		b.WriteString(note + "\n\n")
	}
}

// docDefault is the Default column of a setting.
func docDefault(s Setting) string {
	switch {
	case s.Required == RoleAll:
		return "none; **required**"
	case s.Required == RoleAPI:
		return "none; **required for `serve` and `all`**"
	case s.Required != 0:
		panic("docDefault: say which commands need " + s.Name)
	case s.DefaultDoc != "":
		return s.DefaultDoc
	case s.Default != "":
		return "`" + s.Default + "`"
	}
	return "none"
}

// TestConfigurationDoc keeps the settings tables of docs/configuration.md
// the rendering of the settings table; -update rewrites them.
func TestConfigurationDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin, end := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if begin < 0 || end < begin {
		t.Fatalf("%s lacks the lines around the generated tables:\n%s%s", path, docBegin, docEnd)
	}
	head, generated, tail := doc[:begin+len(docBegin)], doc[begin+len(docBegin):end], doc[end:]
	want := "\n" + renderSettings()
	if generated == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(head+want+tail), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, wantLines := strings.Split(generated, "\n"), strings.Split(want, "\n")
	for i := range min(len(got), len(wantLines)) {
		if got[i] != wantLines[i] {
			t.Fatalf("%s differs from the settings table at generated line %d:\n have %s\n want %s\nrun `go tool task docs` after changing internal/config/settings.go", path, i+1, got[i], wantLines[i])
		}
	}
	t.Fatalf("%s has %d generated lines, the settings table makes %d: run `go tool task docs`", path, len(got), len(wantLines))
}

func TestTheSettingsTable(t *testing.T) {
	seen := map[string]bool{}
	groups := map[string]bool{}
	last := ""
	for _, s := range settings {
		switch {
		case !regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`).MatchString(s.Name):
			t.Errorf("%q is not an environment variable name", s.Name)
		case seen[s.Name]:
			t.Errorf("%s is in the table twice", s.Name)
		case s.Doc == "" || s.Group == "":
			t.Errorf("%s has no documentation or no group", s.Name)
		case strings.Contains(s.Doc, "|"):
			t.Errorf("%s: a | in its documentation would break the Markdown table", s.Name)
		case s.parse == nil && s.Name != "GATEWAY_CONFIG_FILE":
			t.Errorf("%s has no parser", s.Name)
		case s.Default != "" && s.fallback != nil:
			t.Errorf("%s has both a fixed default and a fallback", s.Name)
		case s.Default != "" && s.DefaultDoc != "" && !strings.Contains(s.DefaultDoc, "`"+s.Default+"`"):
			t.Errorf("%s: DefaultDoc %q does not show the default %q", s.Name, s.DefaultDoc, s.Default)
		case s.Required != 0 && (s.Default != "" || s.DefaultDoc != ""):
			t.Errorf("%s is required and has a default", s.Name)
		}
		seen[s.Name] = true
		if s.Group != last && groups[s.Group] {
			t.Errorf("%s: the settings of group %q are not together", s.Name, s.Group)
		}
		groups[s.Group], last = true, s.Group
	}
	for g := range groupNotes {
		if !groups[g] {
			t.Errorf("a note for the unknown group %q", g)
		}
	}
}

// TestEachRequiredSettingIsRequired: what the table says is required, a
// process of that role refuses to start without.
func TestEachRequiredSettingIsRequired(t *testing.T) {
	for _, s := range settings {
		if s.Required == 0 {
			continue // some are required with others (TWILIO_AUTH_TOKEN with Twilio): their checks say so
		}
		for _, role := range []Role{RoleAPI, RoleWorker, RoleAll} {
			cfg, err := Load(env(with(s.Name, "")))
			if err == nil {
				err = cfg.Validate(role)
			}
			named := err != nil && strings.Contains(err.Error(), s.Name+" is required")
			if required := s.Required&role != 0; required != named {
				t.Errorf("%s, role %d: the table says required %v, Validate says %v", s.Name, role, required, err)
			}
		}
	}
}

// TestLoadReadsTheSettingsOfTheTableOnly: every variable Load reads is in
// the table (so in --help and the documentation), and the other way round.
func TestLoadReadsTheSettingsOfTheTableOnly(t *testing.T) {
	asked := map[string]bool{}
	path := filepath.Join(t.TempDir(), "gateway.env")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(func(k string) string {
		asked[k] = true
		if k == "GATEWAY_CONFIG_FILE" {
			return path
		}
		return good[k]
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !asked[s.Name] {
			t.Errorf("Load never reads %s", s.Name)
		}
		delete(asked, s.Name)
	}
	for k := range asked {
		t.Errorf("Load reads %s, which is not in the settings table", k)
	}
}

// TestNoOtherCodeReadsTheGatewaysSettings: a variable read anywhere else
// in the gateway is in the table too (test helpers aside).
func TestNoOtherCodeReadsTheGatewaysSettings(t *testing.T) {
	root := filepath.Join("..", "..")
	getenv := regexp.MustCompile(`os\.(?:Getenv|LookupEnv)\("([A-Z0-9_]+)"\)`)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "redistest") {
			return filepath.SkipDir // redistest is a test helper (REDIS_URL of the tests)
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range getenv.FindAllStringSubmatch(string(src), -1) {
			if _, ok := settingByName(m[1]); !ok {
				t.Errorf("%s reads %s, which is not in the settings table", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func settingByName(name string) (Setting, bool) {
	for _, s := range settings {
		if s.Name == name {
			return s, true
		}
	}
	return Setting{}, false
}
