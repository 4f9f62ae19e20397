// Package tenants keeps each clinic's delivery settings: its quiet hours,
// whether crisis traffic passes them, the time zone of recipients the
// gateway knows nothing about, and whether personal health information may
// appear in SMS and WeChat bodies. Settings live in Redis; processes cache
// them for a few seconds.
package tenants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/schedule"
)

// Crisis traffic in quiet hours.
const (
	CrisisSend  = "send"  // crisis messages pass quiet hours (the default)
	CrisisDefer = "defer" // crisis messages wait for the window's end too
)

// Settings are a tenant's delivery settings.
type Settings struct {
	// QuietHours is the window no routine message reaches a recipient, in
	// the recipient's time zone: "21:00-08:00", or "off".
	QuietHours string `json:"quiet_hours"`
	// CrisisInQuietHours is "send" or "defer".
	CrisisInQuietHours string `json:"crisis_in_quiet_hours"`
	// TimeZone is the IANA zone assumed for recipients whose zone is not
	// known from their contact, the request or their phone number.
	TimeZone string `json:"timezone"`
	// AllowPHI lets template variables marked phi appear in SMS and WeChat
	// bodies. Off by default: minimum necessary.
	AllowPHI bool `json:"allow_phi_in_sms_wechat"`
	// RetentionDays is how long the tenant's messages are kept, in days
	// (0: the gateway's GATEWAY_RETENTION); RecordingRetentionDays its call
	// recordings' (0: the messages' own, within RECORDING_RETENTION).
	// Neither may exceed the gateway's.
	RetentionDays          int `json:"retention_days,omitempty"`
	RecordingRetentionDays int `json:"recording_retention_days,omitempty"`
}

const day = 24 * time.Hour

// Retention is how long the tenant's messages are kept, within max (the
// gateway's).
func (s Settings) Retention(max time.Duration) time.Duration {
	if s.RetentionDays > 0 && time.Duration(s.RetentionDays)*day < max {
		return time.Duration(s.RetentionDays) * day
	}
	return max
}

// RecordingRetention is how long the tenant's recordings are kept, within
// the gateway's recording retention and the tenant's message retention (a
// recording is reached through its message).
func (s Settings) RecordingRetention(maxRecording, max time.Duration) time.Duration {
	r := min(maxRecording, s.Retention(max))
	if s.RecordingRetentionDays > 0 && time.Duration(s.RecordingRetentionDays)*day < r {
		return time.Duration(s.RecordingRetentionDays) * day
	}
	return r
}

// Validate names the first bad setting.
func (s Settings) Validate() error {
	if _, err := schedule.ParseWindow(s.QuietHours); err != nil {
		return fmt.Errorf("quiet_hours: %w", err)
	}
	switch s.CrisisInQuietHours {
	case CrisisSend, CrisisDefer:
	default:
		return fmt.Errorf("crisis_in_quiet_hours: want %q or %q", CrisisSend, CrisisDefer)
	}
	if _, err := schedule.LoadZone(s.TimeZone); err != nil {
		return fmt.Errorf("timezone: %w", err)
	}
	return nil
}

// Check validates settings against the gateway's limits too.
func (s *Store) Check(set Settings) error {
	if err := set.Validate(); err != nil {
		return err
	}
	maxDays := func(d time.Duration) int { return int(d / day) }
	switch {
	case set.RetentionDays < 0 || (s.MaxRetention > 0 && set.RetentionDays > maxDays(s.MaxRetention)):
		return fmt.Errorf("retention_days: want 1 to %d days (GATEWAY_RETENTION), or 0 for the gateway's", maxDays(s.MaxRetention))
	case set.RecordingRetentionDays < 0 || (s.MaxRecordingRetention > 0 && set.RecordingRetentionDays > maxDays(s.MaxRecordingRetention)):
		return fmt.Errorf("recording_retention_days: want 1 to %d days (RECORDING_RETENTION), or 0 for the messages'", maxDays(s.MaxRecordingRetention))
	case set.RetentionDays > 0 && set.RecordingRetentionDays > set.RetentionDays:
		return fmt.Errorf("recording_retention_days: at most retention_days (%d): a recording is reached through its message", set.RetentionDays)
	}
	return nil
}

// Window is the parsed quiet window.
func (s Settings) Window() schedule.Window {
	w, _ := schedule.ParseWindow(s.QuietHours)
	return w
}

// QuietFor is the quiet window that applies to a message of the priority
// ("" when none does).
func (s Settings) QuietFor(priority string) string {
	w := s.Window()
	if !w.Enabled() || (priority == "crisis" && s.CrisisInQuietHours != CrisisDefer) {
		return ""
	}
	return w.String()
}

// Store reads and writes settings.
type Store struct {
	// MaxRetention and MaxRecordingRetention are the gateway's
	// (GATEWAY_RETENTION, RECORDING_RETENTION): a tenant's may be shorter,
	// never longer (0: not checked).
	MaxRetention, MaxRecordingRetention time.Duration

	rdb      redis.UniversalClient
	defaults Settings
	ttl      time.Duration
	mu       sync.Mutex
	cache    map[string]cached
}

type cached struct {
	s  Settings
	at time.Time
}

// CacheTTL is how long a process keeps settings before reading them again.
const CacheTTL = 5 * time.Second

// NewStore returns a store whose tenants start from defaults.
func NewStore(rdb redis.UniversalClient, defaults Settings) (*Store, error) {
	if err := defaults.Validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, defaults: defaults, ttl: CacheTTL, cache: map[string]cached{}}, nil
}

// Defaults are the gateway-wide settings a tenant starts with.
func (s *Store) Defaults() Settings { return s.defaults }

func key(tenant string) string { return "gw:tenant:{" + tenant + "}:settings" }

// Get returns a tenant's settings (the defaults until it sets its own).
func (s *Store) Get(ctx context.Context, tenant string) (Settings, error) {
	s.mu.Lock()
	c, ok := s.cache[tenant]
	s.mu.Unlock()
	if ok && time.Since(c.at) < s.ttl {
		return c.s, nil
	}
	set := s.defaults
	raw, err := s.rdb.Get(ctx, key(tenant)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return Settings{}, err
	default:
		if err := json.Unmarshal(raw, &set); err != nil {
			return Settings{}, fmt.Errorf("tenants: settings of %s: %w", tenant, err)
		}
	}
	s.mu.Lock()
	s.cache[tenant] = cached{s: set, at: time.Now()}
	s.mu.Unlock()
	return set, nil
}

// Put validates and stores a tenant's settings.
func (s *Store) Put(ctx context.Context, tenant string, set Settings) error {
	if err := s.Check(set); err != nil {
		return err
	}
	raw, _ := json.Marshal(set)
	if err := s.rdb.Set(ctx, key(tenant), raw, 0).Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cache[tenant] = cached{s: set, at: time.Now()}
	s.mu.Unlock()
	return nil
}
