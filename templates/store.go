package templates

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxTenantTemplates is the most templates one tenant may store.
const MaxTenantTemplates = 200

// Errors of the template store.
var (
	// ErrNotFound: neither the tenant nor the built-ins have the template.
	ErrNotFound = errors.New("template not found")
	// ErrBuiltinReadOnly: a built-in template cannot be deleted (a tenant
	// template of the same name overrides it instead).
	ErrBuiltinReadOnly = errors.New("built-in templates cannot be deleted")
	// ErrTooMany: the tenant already stores MaxTenantTemplates templates.
	ErrTooMany = errors.New("too many templates")
)

// Store keeps tenants' templates in Redis, in front of the built-in ones.
//
// Each tenant's templates are one hash, gw:tpl:{<tenant>}, mapping a
// template's name to its validated document in canonical JSON.
type Store struct {
	rdb     redis.UniversalClient
	builtin map[string]*Template
}

// NewStore returns a store over rdb with the given built-in templates
// (usually Builtin()). The built-ins are copied and marked SourceBuiltin.
func NewStore(rdb redis.UniversalClient, builtin map[string]*Template) *Store {
	b := make(map[string]*Template, len(builtin))
	for name, t := range builtin {
		c := t.Clone()
		c.Source = SourceBuiltin
		b[name] = c
	}
	return &Store{rdb: rdb, builtin: b}
}

// tenantKey is the hash of a tenant's templates.
func tenantKey(tenant string) string { return "gw:tpl:{" + tenant + "}" }

// checkTenant refuses an empty tenant id, which would share a key between
// misconfigured callers.
func checkTenant(tenant string) error {
	if tenant == "" {
		return errors.New("templates: empty tenant id")
	}
	return nil
}

// Get returns the tenant's template of that name, or else the built-in one,
// or ErrNotFound. The template is the caller's own copy.
func (s *Store) Get(ctx context.Context, tenant, name string) (*Template, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q is not a template name", ErrNotFound, name)
	}
	doc, err := s.rdb.HGet(ctx, tenantKey(tenant), name).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		if b := s.builtin[name]; b != nil {
			return b.Clone(), nil
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	case err != nil:
		return nil, fmt.Errorf("templates: get %s: %w", name, err)
	}
	return parseStored(name, doc)
}

// parseStored parses a stored tenant document. It was validated when it
// was stored; a failure here means the validation rules changed since, and
// the error says so.
func parseStored(name string, doc []byte) (*Template, error) {
	t, err := Parse(name, doc, true)
	if err != nil {
		return nil, fmt.Errorf("templates: stored template %s no longer validates, store it again: %w", name, err)
	}
	t.Source = SourceTenant
	return t, nil
}

// putScript stores a template unless that adds one more than the limit.
// KEYS[1] tenant hash; ARGV: name, document, limit. Returns 1 if stored.
var putScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
`)

// Put validates a tenant's template document (JSON, the schema of the
// built-in files) and stores it under name, replacing the tenant's template
// of that name and overriding a built-in one. It returns the stored
// template. A document over MaxDocBytes is ErrTooLarge, an invalid one a
// *ParseError, the tenant's MaxTenantTemplates+1st template ErrTooMany.
func (s *Store) Put(ctx context.Context, tenant string, name string, doc []byte) (*Template, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	t, err := Parse(name, doc, true)
	if err != nil {
		return nil, err
	}
	canon, err := canonicalJSON(t)
	if err != nil {
		return nil, fmt.Errorf("templates: encode %s: %w", name, err)
	}
	if len(canon) > MaxDocBytes {
		// Re-encoding escapes a few characters, so it can outgrow a
		// document that was just under the limit.
		return nil, fmt.Errorf("%w: %s encodes to %d bytes, the limit is %d (64 KiB)", ErrTooLarge, name, len(canon), MaxDocBytes)
	}
	ok, err := putScript.Run(ctx, s.rdb, []string{tenantKey(tenant)}, name, canon, MaxTenantTemplates).Int()
	if err != nil {
		return nil, fmt.Errorf("templates: put %s: %w", name, err)
	}
	if ok != 1 {
		return nil, fmt.Errorf("%w: a tenant may store %d templates; delete one first", ErrTooMany, MaxTenantTemplates)
	}
	t.Source = SourceTenant
	return t, nil
}

// canonicalJSON encodes a parsed template as stored: without its Source,
// HTML characters left as they are.
func canonicalJSON(t *Template) ([]byte, error) {
	c := *t
	c.Source = ""
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Delete removes the tenant's template of that name. A built-in of the same
// name then applies again. Deleting a name the tenant does not have is
// ErrBuiltinReadOnly for a built-in name and ErrNotFound otherwise.
func (s *Store) Delete(ctx context.Context, tenant, name string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	if !ValidName(name) {
		return fmt.Errorf("%w: %q is not a template name", ErrNotFound, name)
	}
	n, err := s.rdb.HDel(ctx, tenantKey(tenant), name).Result()
	if err != nil {
		return fmt.Errorf("templates: delete %s: %w", name, err)
	}
	if n == 0 {
		if s.builtin[name] != nil {
			return fmt.Errorf("%w: %s is built in", ErrBuiltinReadOnly, name)
		}
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return nil
}

// List returns the templates the tenant can use, sorted by name: the
// built-ins (SourceBuiltin) and the tenant's own (SourceTenant), a tenant's
// template replacing the built-in of the same name.
func (s *Store) List(ctx context.Context, tenant string) ([]*Template, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	docs, err := s.rdb.HGetAll(ctx, tenantKey(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("templates: list: %w", err)
	}
	out := make([]*Template, 0, len(docs)+len(s.builtin))
	for name, doc := range docs {
		t, err := parseStored(name, []byte(doc))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	for name, b := range s.builtin {
		if _, own := docs[name]; !own {
			out = append(out, b.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *Template) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
