// Package admission decides, in front of the queues, whether the gateway
// takes a request, so that one clinic's runaway integration cannot fill
// Redis and stop every clinic's crisis messages. Three limits, each shared
// by every API and worker process through Redis:
//
//   - a per-tenant request rate (GCRA, one Lua script per request): a
//     request over it is refused (429) with the time to come back, except
//     crisis messages, broadcasts and cancellations, which are counted
//     but never refused;
//   - a per-tenant backlog cap per channel, in hours of the channel's
//     sender capacity (like Twilio's per-sender queue overflow): a message
//     of any priority but crisis beyond it is refused (429). Each counted
//     message is a member of its tenant's backlog hash, added when it is
//     accepted and removed when it leaves the queue (sent, failed,
//     canceled, suppressed), so the count drops once per message however
//     often its send is retried or its removal repeated;
//   - a Redis memory guard, read from INFO memory at most once a second
//     per process: bulk writes are refused above 80 % of maxmemory,
//     routine ones above 90 %, and urgent ones (crisis messages,
//     broadcasts, provider callbacks, patient replies) only above 97 %,
//     all with 503.
//
// Every refusal is a typed error carrying its Retry-After; the HTTP layer
// maps them to problem answers. A limit the gateway cannot check because
// Redis does not answer admits the request: the write that follows fails
// on its own if the store is really unusable, and a crisis message must
// never be refused by the limiter's own trouble.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Class is how close to full Redis may be when a request is still taken.
type Class int

// Classes, from the first refused to the last.
const (
	// Bulk: bulk-priority messages.
	Bulk Class = iota
	// Routine: normal- and high-priority messages and every other write.
	Routine
	// Urgent: crisis messages, broadcasts, provider status callbacks and
	// patient replies (inbound webhooks), consent changes.
	Urgent
)

func (c Class) String() string {
	switch c {
	case Bulk:
		return "bulk"
	case Routine:
		return "routine"
	}
	return "urgent"
}

// Priorities of messages (as package workers names them).
const (
	PriorityCrisis = "crisis"
	PriorityBulk   = "bulk"
)

// ClassOf is the class of a message of the given priority ("" is normal).
func ClassOf(priority string) Class {
	switch priority {
	case PriorityCrisis:
		return Urgent
	case PriorityBulk:
		return Bulk
	}
	return Routine
}

// Thresholds are the fractions of Redis maxmemory above which each class
// is refused; the zero value turns the memory guard off.
type Thresholds struct {
	Bulk, Routine, Urgent float64
}

// DefaultThresholds refuse bulk above 80 %, routine above 90 % and urgent
// requests only in the last 3 %.
var DefaultThresholds = Thresholds{Bulk: 0.80, Routine: 0.90, Urgent: 0.97}

// Of is the threshold of a class.
func (t Thresholds) Of(c Class) float64 {
	switch c {
	case Bulk:
		return t.Bulk
	case Routine:
		return t.Routine
	}
	return t.Urgent
}

// Off reports whether the guard is off.
func (t Thresholds) Off() bool { return t == Thresholds{} }

// Config configures a Controller.
type Config struct {
	// TenantRate limits every tenant's API requests; TenantRates
	// overrides it per tenant. The zero Rate is no limit.
	TenantRate  Rate
	TenantRates map[string]Rate
	// BacklogHours caps a tenant's backlog on a channel at that many hours
	// of the channel's sender rate; 0: no cap.
	BacklogHours float64
	// SenderRates is each channel's sender rate in cost units per second
	// (SMS segments, else messages); a channel without one has no cap.
	SenderRates map[string]float64
	// Memory are the memory guard's thresholds (zero: no guard).
	Memory Thresholds
	// MemoryTTL is how long one reading of Redis memory is used
	// (default one second).
	MemoryTTL time.Duration
	// ReadMemory reads how much memory Redis uses; nil reads INFO memory
	// (on Cluster, of the fullest primary).
	ReadMemory func(ctx context.Context) (Memory, error)
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
	// Logger (slog.Default when nil).
	Logger *slog.Logger
}

// Controller is admission control, safe for concurrent use. Its state is
// in Redis, except the memory reading each process caches.
type Controller struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	mem        Memory    // the last reading
	known      bool      // mem holds a reading
	tried      bool      // Redis was asked (triedAt), answering or not
	triedAt    time.Time // when
	refreshing bool      // a request is reading it now
	failing    bool      // the last reading failed (logged once)
	refusing   int       // classes refused at the last reading (logged on change)
}

// New returns a Controller on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Controller, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MemoryTTL <= 0 {
		cfg.MemoryTTL = time.Second
	}
	if err := cfg.TenantRate.check("the tenant rate"); err != nil {
		return nil, err
	}
	for t, r := range cfg.TenantRates {
		if err := r.check("tenant " + t + "'s rate"); err != nil {
			return nil, err
		}
	}
	if cfg.BacklogHours < 0 || math.IsNaN(cfg.BacklogHours) {
		return nil, fmt.Errorf("admission: backlog hours must be 0 or more, got %v", cfg.BacklogHours)
	}
	m := cfg.Memory
	if !m.Off() && !(0 < m.Bulk && m.Bulk <= m.Routine && m.Routine <= m.Urgent && m.Urgent <= 1) {
		return nil, fmt.Errorf("admission: memory thresholds must rise from bulk to routine to urgent, within (0, 1]: %+v", m)
	}
	c := &Controller{rdb: rdb, cfg: cfg, log: cfg.Logger.With("comp", "admission")}
	if c.cfg.ReadMemory == nil {
		c.cfg.ReadMemory = c.infoMemory
	}
	return c, nil
}

// Retry-After of refusals that do not compute their own.
const (
	// MemoryRetryAfter is the Retry-After of bulk and routine requests
	// refused by the memory guard: memory frees up as the senders work
	// through the queues, over minutes rather than seconds.
	MemoryRetryAfter = 30 * time.Second
	// UrgentRetryAfter is the Retry-After of an urgent request refused by
	// the memory guard: worth trying again soon.
	UrgentRetryAfter = 5 * time.Second
	// MaxBacklogRetryAfter bounds the Retry-After of a full backlog.
	MaxBacklogRetryAfter = time.Hour
)

// RateLimitedError refuses a request over its tenant's rate.
type RateLimitedError struct {
	Tenant string
	State  RateState
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("tenant %s is over its request rate (%g/s, burst %d)", e.Tenant, e.State.Rate.PerSecond, e.State.Rate.Burst)
}

// RetryAfter is how long to wait before the next request is admitted.
func (e *RateLimitedError) RetryAfter() time.Duration { return e.State.Wait }

// BacklogFullError refuses a message whose tenant's backlog on the
// channel is at its cap.
type BacklogFullError struct {
	Tenant, Channel string
	// Queued and Cap are in the sender's cost units (SMS segments, else
	// messages); Hours is the cap in hours of the sender's rate.
	Queued, Cap int64
	Hours       float64
	Wait        time.Duration
}

func (e *BacklogFullError) Error() string {
	return fmt.Sprintf("tenant %s's %s backlog is full: %d queued, cap %d (%g h of the sender)", e.Tenant, e.Channel, e.Queued, e.Cap, e.Hours)
}

// RetryAfter is about how long the sender takes to make room.
func (e *BacklogFullError) RetryAfter() time.Duration { return e.Wait }

// StoreFullError refuses a write because Redis is too close to its
// maxmemory for the request's class.
type StoreFullError struct {
	Class     Class
	Memory    Memory
	Threshold float64
}

func (e *StoreFullError) Error() string {
	return fmt.Sprintf("Redis memory is at %.1f%% of maxmemory; %s requests are refused above %.0f%%",
		100*e.Memory.Ratio(), e.Class, 100*e.Threshold)
}

// RetryAfter is MemoryRetryAfter, or UrgentRetryAfter for urgent requests.
func (e *StoreFullError) RetryAfter() time.Duration {
	if e.Class == Urgent {
		return UrgentRetryAfter
	}
	return MemoryRetryAfter
}

// IsOutOfMemory reports whether err is Redis refusing a write at its
// maxmemory (noeviction): the store is full rather than unreachable.
func IsOutOfMemory(err error) bool {
	var re redis.Error
	// A script's error carries the command's: "OOM command not allowed …".
	return errors.As(err, &re) && (redis.HasErrorPrefix(err, "OOM") || strings.Contains(re.Error(), "OOM command not allowed"))
}

func ceilSeconds(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Second - 1) / time.Second * time.Second
}
