package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// AdmissionConfig is admission control in front of the queues, shared by
// every API and worker process through Redis (package internal/admission).
type AdmissionConfig struct {
	// TenantRate is every tenant's API request rate
	// (GATEWAY_TENANT_RATE_LIMIT "RATE[:BURST]": requests per second, and
	// how many may come at once, two seconds' worth when not given; "off":
	// none). A request over it gets 429, except crisis messages,
	// broadcasts and cancellations, which are counted but never refused.
	TenantRate RateLimit
	// TenantRates overrides TenantRate for some tenants
	// (GATEWAY_TENANT_RATE_LIMITS "clinic-a=50,clinic-b=500:1000,lab=off").
	TenantRates map[string]RateLimit
	// BacklogHours caps each tenant's queued messages on a channel, of
	// every priority but crisis, at that many hours of the channel's
	// sender rate (GATEWAY_TENANT_BACKLOG_HOURS; 0: no cap). A message
	// beyond it gets 429 (like Twilio's queue overflow, error 30001).
	BacklogHours float64
	// MemoryGuard refuses writes (503) as Redis nears its maxmemory
	// (GATEWAY_REDIS_MEMORY_GUARD "BULK,ROUTINE,URGENT" in percent of
	// maxmemory; "off").
	MemoryGuard MemoryGuard
}

// RateLimit is a request rate with a burst; the zero value is no limit.
type RateLimit struct {
	PerSecond float64
	// Burst is how many requests may come at once (0: two seconds' worth).
	Burst int
}

// MemoryGuard holds the fractions of Redis maxmemory at which requests
// are refused: bulk messages first, then routine messages (normal, high)
// and other writes, and urgent ones (crisis messages, broadcasts, provider
// callbacks, patient replies) last. The zero value turns the guard off.
type MemoryGuard struct {
	Bulk, Routine, Urgent float64
}

// MaxBacklogHours is the largest GATEWAY_TENANT_BACKLOG_HOURS (a week).
const MaxBacklogHours = 168

// ParseRateLimit parses "RATE[:BURST]" (requests per second, e.g. 100 or
// 0.5, and a whole burst) or "off".
func ParseRateLimit(v string) (RateLimit, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "off") {
		return RateLimit{}, nil
	}
	rate, burst, hasBurst := strings.Cut(v, ":")
	var r RateLimit
	f, err := strconv.ParseFloat(strings.TrimSpace(rate), 64)
	if err != nil || !(f > 0 && f <= 1e6) {
		return RateLimit{}, errors.New("want RATE or RATE:BURST, requests per second above 0 and at most 1000000 (e.g. 100 or 100:200), or off")
	}
	r.PerSecond = f
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(burst))
		if err != nil || b < 1 || b > 10_000_000 {
			return RateLimit{}, errors.New("the burst (after ':') must be a whole number from 1 to 10000000")
		}
		r.Burst = b
	}
	return r, nil
}

// ParseRateLimits parses "tenant=RATE[:BURST],tenant=off,…".
func ParseRateLimits(v string) (map[string]RateLimit, error) {
	out := map[string]RateLimit{}
	for i, pair := range strings.Split(v, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		tenant, rate, ok := strings.Cut(pair, "=")
		tenant = strings.TrimSpace(tenant)
		if !ok || !validTenant(tenant) || tenant == "" {
			return nil, fmt.Errorf("entry %d: want tenant=RATE[:BURST] or tenant=off (tenant names: letters, digits, '-', '_')", i+1)
		}
		if _, dup := out[tenant]; dup {
			return nil, fmt.Errorf("entry %d: tenant %q is given twice", i+1, tenant)
		}
		r, err := ParseRateLimit(rate)
		if err != nil {
			return nil, fmt.Errorf("entry %d (tenant %q): %v", i+1, tenant, err)
		}
		out[tenant] = r
	}
	return out, nil
}

// ParseMemoryGuard parses "BULK,ROUTINE,URGENT" in percent of maxmemory
// (e.g. 80,90,97), rising, each above 0 and at most 100; or "off".
func ParseMemoryGuard(v string) (MemoryGuard, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "off") {
		return MemoryGuard{}, nil
	}
	parts := strings.Split(v, ",")
	bad := errors.New("want three percentages of Redis maxmemory, BULK,ROUTINE,URGENT, rising, each above 0 and at most 100 (e.g. 80,90,97), or off")
	if len(parts) != 3 {
		return MemoryGuard{}, bad
	}
	var p [3]float64
	for i, s := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%")), 64)
		if err != nil || !(f > 0 && f <= 100) || (i > 0 && f < p[i-1]) {
			return MemoryGuard{}, bad
		}
		p[i] = f
	}
	return MemoryGuard{Bulk: p[0] / 100, Routine: p[1] / 100, Urgent: p[2] / 100}, nil
}

// valid reports whether a rate set in code is one ParseRateLimit could give.
func (r RateLimit) valid() bool { return r.PerSecond >= 0 && r.PerSecond <= 1e6 && r.Burst >= 0 }
