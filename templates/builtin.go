package templates

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
)

// files are the built-in templates, one YAML file per template, named after
// the template.
//
//go:embed *.yaml
var files embed.FS

// builtinOnce parses the embedded templates the first time they are needed.
var builtinOnce = sync.OnceValues(parseBuiltin)

// Builtin returns the built-in templates by name, with Source
// SourceBuiltin. The embedded files are parsed once; each call returns its
// own copies, which the caller may change. An error means a shipped file is
// invalid, which the package's tests rule out.
func Builtin() (map[string]*Template, error) {
	all, err := builtinOnce()
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Template, len(all))
	for name, t := range all {
		out[name] = t.Clone()
	}
	return out, nil
}

// parseBuiltin parses every embedded file.
func parseBuiltin() (map[string]*Template, error) {
	entries, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Template, len(entries))
	var errs []error
	for _, file := range entries {
		data, err := files.ReadFile(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := strings.TrimSuffix(file, ".yaml")
		t, err := Parse(name, data, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("built-in template file %s: %w", file, err))
			continue
		}
		t.Source = SourceBuiltin
		out[name] = t
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
