package questionnaires

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// Errors.
var (
	ErrNotFound            = errors.New("questionnaire not found")
	ErrResponseNotFound    = errors.New("questionnaire response not found")
	ErrAlreadyOpen         = errors.New("this questionnaire is already in progress for this address")
	ErrIdempotencyMismatch = errors.New("idempotency key used with another request")
	errBusy                = errors.New("questionnaire response is busy; try again")
)

// Redis keys. A tenant's keys share its hash tag.
func defKey(tenant, name string) string  { return "gw:qn:{" + tenant + "}:def:" + name }
func namesKey(tenant string) string      { return "gw:qn:{" + tenant + "}:names" }
func respKey(tenant, id string) string   { return "gw:qn:{" + tenant + "}:resp:" + id }
func lockKey(tenant, id string) string   { return "gw:qn:{" + tenant + "}:lock:" + id }
func listKey(tenant, name string) string { return "gw:qn:{" + tenant + "}:resps:" + name }
func idemKey(tenant, key string) string  { return "gw:qn:{" + tenant + "}:idem:" + hash(key) }
func openKey(id consent.Identity) string { return "gw:qn:open:" + hash(id.String()) }

// byKey lists a tenant's responses to one address, by creation time.
func byKey(tenant string, id consent.Identity) string {
	return "gw:qn:{" + tenant + "}:by:" + hash(consent.Normalise(id).String())
}

// maxOpen is the longest a response stays in progress (expire_after is at
// most 30 days): a response is last saved by then, and kept for the
// retention after that.
const maxOpen = 31 * 24 * time.Hour

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

var (
	startersOnce sync.Once
	starters     map[string]*Definition
)

func builtin(name string) *Definition {
	startersOnce.Do(func() { starters = Starters() })
	return starters[name]
}

func builtinNames() []string {
	builtin("")
	out := make([]string, 0, len(starters))
	for n := range starters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// putScript stores a new version unless the latest one has the same spec:
// KEYS[1] the definition hash, KEYS[2] the tenant's names; ARGV: spec
// JSON, created-at, the version a built-in of that name has (0: none),
// name. It returns {version, 1 when new}.
var putScript = redis.NewScript(`
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or ARGV[3])
if latest > 0 and redis.call('HGET', KEYS[1], tostring(latest)) == ARGV[1] then
  return {latest, 0}
end
latest = latest + 1
redis.call('HSET', KEYS[1], tostring(latest), ARGV[1], tostring(latest) .. ':at', ARGV[2], 'latest', latest)
redis.call('SADD', KEYS[2], ARGV[4])
return {latest, 1}
`)

// Put validates a definition and stores it under name as a new version,
// unless it is the same as the latest (created is false then). Responses
// in progress keep the version they started with.
func (s *Service) Put(ctx context.Context, tenant, name string, spec Spec) (def *Definition, created bool, err error) {
	if !ValidName(name) {
		return nil, false, invalidField("name", "must be 1-64 lower-case letters, digits, '-' or '_'")
	}
	if err := spec.Validate(); err != nil {
		return nil, false, err
	}
	b, _ := json.Marshal(spec)
	base := 0
	if bi := builtin(name); bi != nil {
		base = bi.Version
		if n, err := s.Redis.Exists(ctx, defKey(tenant, name)).Result(); err != nil {
			return nil, false, err
		} else if n == 0 {
			if ob, _ := json.Marshal(bi.Spec); string(ob) == string(b) {
				return bi, false, nil
			}
		}
	}
	now := s.now().UTC()
	res, err := putScript.Run(ctx, s.Redis, []string{defKey(tenant, name), namesKey(tenant)},
		b, now.Format(time.RFC3339Nano), base, name).Int64Slice()
	if err != nil {
		return nil, false, err
	}
	def, err = s.Definition(ctx, tenant, name, int(res[0]))
	return def, res[1] == 1, err
}

// Definition returns version v of a tenant's questionnaire (0: the
// latest), the built-in one when the tenant has none of that name.
func (s *Service) Definition(ctx context.Context, tenant, name string, v int) (*Definition, error) {
	key := defKey(tenant, name)
	if v == 0 {
		latest, err := s.Redis.HGet(ctx, key, "latest").Int()
		switch {
		case errors.Is(err, redis.Nil):
			if bi := builtin(name); bi != nil {
				return bi, nil
			}
			return nil, ErrNotFound
		case err != nil:
			return nil, err
		}
		v = latest
	}
	vals, err := s.Redis.HMGet(ctx, key, strconv.Itoa(v), strconv.Itoa(v)+":at").Result()
	if err != nil {
		return nil, err
	}
	raw, _ := vals[0].(string)
	if raw == "" {
		if bi := builtin(name); bi != nil && bi.Version == v {
			return bi, nil
		}
		return nil, ErrNotFound
	}
	def := &Definition{Name: name, Version: v}
	if err := json.Unmarshal([]byte(raw), &def.Spec); err != nil {
		return nil, err
	}
	at, _ := vals[1].(string)
	def.CreatedAt, _ = time.Parse(time.RFC3339Nano, at)
	return def, nil
}

// List returns the latest version of each questionnaire the tenant can
// send, its own and the built-in ones, by name.
func (s *Service) List(ctx context.Context, tenant string) ([]*Definition, error) {
	names, err := s.Redis.SMembers(ctx, namesKey(tenant)).Result()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	for _, n := range builtinNames() {
		if !seen[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]*Definition, 0, len(names))
	for _, n := range names {
		d, err := s.Definition(ctx, tenant, n, 0)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// GetResponse returns a tenant's response.
func (s *Service) GetResponse(ctx context.Context, tenant, id string) (*Response, error) {
	raw, err := s.Redis.Get(ctx, respKey(tenant, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrResponseNotFound
	}
	if err != nil {
		return nil, err
	}
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// MaxList is the most responses one list returns.
const MaxList = 1000

// Responses lists a questionnaire's responses, newest first, up to limit
// (1 to MaxList), those created before the response before ("" for the
// newest).
func (s *Service) Responses(ctx context.Context, tenant, name, before string, limit int) ([]*Response, error) {
	p, err := s.Find(ctx, tenant, Filter{Questionnaire: name, Before: before}, limit)
	return p.Responses, err
}

// save writes a response, listed under its questionnaire and its address
// (from its first save on); an open one is also listed across tenants.
func (s *Service) save(ctx context.Context, r *Response) error {
	r.UpdatedAt = s.now().UTC()
	b, _ := json.Marshal(r)
	pipe := s.Redis.TxPipeline()
	pipe.Set(ctx, respKey(r.Tenant, r.ID), b, s.retention())
	// The questionnaire's list and the address's, each trimmed of the
	// responses no longer kept.
	lists := []string{listKey(r.Tenant, r.Questionnaire)}
	if id := r.identity(); id.Valid() {
		lists = append(lists, byKey(r.Tenant, id))
	}
	gone := "(" + strconv.FormatInt(r.UpdatedAt.Add(-s.retention()-maxOpen).UnixMilli(), 10)
	for _, key := range lists {
		pipe.ZAddNX(ctx, key, redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
		pipe.ZRemRangeByScore(ctx, key, "-inf", gone)
		pipe.Expire(ctx, key, s.retention())
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		return err
	}
	// The address's open responses are kept across tenants (hash tags differ).
	member := r.Tenant + " " + r.ID
	key := openKey(r.identity())
	if r.State == StateInProgress {
		pipe := s.Redis.Pipeline()
		pipe.SAdd(ctx, key, member)
		pipe.Expire(ctx, key, 31*24*time.Hour)
		_, err = pipe.Exec(ctx)
		return err
	}
	return s.Redis.SRem(ctx, key, member).Err()
}

// lock holds a response while an answer, a timer or a stop changes it.
func (s *Service) lock(ctx context.Context, tenant, id string) (func(), error) {
	key := lockKey(tenant, id)
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	for try := 0; try < 100; try++ {
		ok, err := s.Redis.SetNX(ctx, key, token, 30*time.Second).Result()
		if err != nil {
			return nil, err
		}
		if ok {
			return func() {
				ctx := context.WithoutCancel(ctx)
				if v, _ := s.Redis.Get(ctx, key).Result(); v == token {
					s.Redis.Del(ctx, key)
				}
			}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, errBusy
}

// openResponses lists "tenant id" of the responses in progress to an address.
func (s *Service) openResponses(ctx context.Context, id consent.Identity) ([][2]string, error) {
	members, err := s.Redis.SMembers(ctx, openKey(id)).Result()
	if err != nil {
		return nil, err
	}
	out := make([][2]string, 0, len(members))
	for _, m := range members {
		t, r, ok := strings.Cut(m, " ")
		if ok {
			out = append(out, [2]string{t, r})
		}
	}
	return out, nil
}
