package schedule

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nyaruka/phonenumbers"
)

// Sources of a recipient's time zone, as ResolveZone reports them.
const (
	ZoneFromContact = "contact" // the contact's stored zone
	ZoneFromRequest = "request" // the request's to.timezone
	ZoneFromPhone   = "phone"   // the phone number's region
	ZoneFromTenant  = "tenant"  // the tenant's default zone
	ZoneFromDefault = "default" // the gateway's default zone (UTC when unset)
)

// zones caches loaded locations by name: the set of IANA names is finite and
// only names that load are kept, so the cache stays small.
var zones sync.Map // name → *time.Location

// LoadZone returns the IANA time zone of the name, such as "Asia/Shanghai"
// or "UTC". "" and "Local" are refused: the gateway's own zone says nothing
// about a recipient. Zones come from the host's database or, without one,
// from the copy embedded in the binary.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || strings.EqualFold(name, "local") {
		return nil, fmt.Errorf("schedule: time zone %q: want an IANA time zone such as Asia/Shanghai", name)
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("schedule: %w", err)
	}
	zones.Store(name, l)
	return l, nil
}

// ZoneForPhone returns the time zone of an E.164 phone number's region
// ("+8613800138000" → Asia/Shanghai), from libphonenumber's time-zone data.
// It returns false for a number that does not parse or is not valid, and for
// one whose region has no known zone.
//
// When the number maps to several zones that keep the same clock all year
// the first one the library lists is used (a UK mobile gives
// Europe/Guernsey, London's clock). When they differ — a US toll-free
// number, an Australian mobile — the number does not tell, and ZoneForPhone
// returns false, so the tenant's zone applies rather than a guess that could
// be hours off. ZonesForPhone returns them all.
func ZoneForPhone(e164 string) (*time.Location, bool) {
	var first *time.Location
	for _, name := range ZonesForPhone(e164) {
		l, err := LoadZone(name)
		if err != nil {
			continue
		}
		if first == nil {
			first = l
			continue
		}
		if !sameClock(first, l) {
			// The number does not tell which of several clocks its owner
			// lives by (a US toll-free or mobile number without a local
			// area code): guessing could wake someone at 3 a.m.
			return nil, false
		}
	}
	return first, first != nil
}

// sameClock says whether two zones keep the same time all year (checked in
// January and July of this and the next year), e.g. London and Guernsey.
func sameClock(a, b *time.Location) bool {
	y := time.Now().Year()
	for _, year := range []int{y, y + 1} {
		for _, m := range []time.Month{time.January, time.April, time.July, time.October} {
			t := time.Date(year, m, 1, 12, 0, 0, 0, time.UTC)
			_, oa := t.In(a).Zone()
			_, ob := t.In(b).Zone()
			if oa != ob {
				return false
			}
		}
	}
	return true
}

// ZonesForPhone returns the names of the time zones libphonenumber gives for
// a valid E.164 number, in its order, or nil.
func ZonesForPhone(e164 string) []string {
	s := strings.TrimSpace(e164)
	if !strings.HasPrefix(s, "+") || len(s) > 32 {
		return nil
	}
	n, err := phonenumbers.Parse(s, "")
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return nil
	}
	names, err := phonenumbers.GetTimezonesForNumber(n)
	if err != nil {
		return nil
	}
	var out []string
	for _, name := range names {
		if name != "" && name != phonenumbers.UNKNOWN_TIMEZONE {
			out = append(out, name)
		}
	}
	return out
}

// ResolveZone picks the recipient's time zone from, in order: the contact's
// zone, the request's to.timezone, the region of the phone number, the
// tenant's default and the gateway's default. An empty or unknown name, or a
// phone number without a zone, passes to the next source; when none gives a
// zone the result is UTC. It returns the zone and the source that decided
// (ZoneFromContact … ZoneFromDefault).
func ResolveZone(contactTZ, requestTZ, phone, tenantTZ, defaultTZ string) (*time.Location, string) {
	if l, err := LoadZone(strings.TrimSpace(contactTZ)); err == nil {
		return l, ZoneFromContact
	}
	if l, err := LoadZone(strings.TrimSpace(requestTZ)); err == nil {
		return l, ZoneFromRequest
	}
	if phone != "" {
		if l, ok := ZoneForPhone(phone); ok {
			return l, ZoneFromPhone
		}
	}
	if l, err := LoadZone(strings.TrimSpace(tenantTZ)); err == nil {
		return l, ZoneFromTenant
	}
	if l, err := LoadZone(strings.TrimSpace(defaultTZ)); err == nil {
		return l, ZoneFromDefault
	}
	return time.UTC, ZoneFromDefault
}
