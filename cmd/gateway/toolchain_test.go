package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTheReleaseToolchainIsTheSameEverywhere: the Go release the gateway is
// built with is named in go.mod, Taskfile.yml, .ci/run, the Dockerfile and the
// README; a raise in one place and not the others would ship or test another
// standard library than the one checked for vulnerabilities.
func TestTheReleaseToolchainIsTheSameEverywhere(t *testing.T) {
	root := filepath.Join("..", "..")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	m := regexp.MustCompile(`(?m)^toolchain go(\d+\.\d+\.\d+)$`).FindStringSubmatch(read("go.mod"))
	if m == nil {
		t.Fatal("go.mod has no toolchain line")
	}
	version := m[1]
	for _, c := range []struct{ file, want string }{
		{"Taskfile.yml", "GOTOOLCHAIN: go" + version + "\n"},
		{".ci/run", "export GOTOOLCHAIN=go" + version + "\n"},
		{"deployments/Dockerfile", "FROM golang:" + version + " AS build\n"},
		{"deployments/README.md", "`golang:" + version + "`"},
		{"docs/deployment.md", "`golang:" + version + "`"},
		{"docs/security.md", "built with Go " + version},
		{"README.md", "Go " + version},
	} {
		if !strings.Contains(read(c.file), c.want) {
			t.Errorf("%s does not say %q (go.mod's toolchain is go%s)", c.file, c.want, version)
		}
	}
	for _, file := range []string{"Taskfile.yml", ".ci/run", "deployments/Dockerfile", "README.md"} {
		for _, other := range regexp.MustCompile(`go(?:lang:|1\.)[\d.]+`).FindAllString(read(file), -1) {
			if other != "go"+version && other != "golang:"+version {
				t.Errorf("%s names %s beside go%s", file, other, version)
			}
		}
	}
}
