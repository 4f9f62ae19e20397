package questionnaires

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/workers"
)

// States lists the response states, in a response's order.
var States = []string{StateInProgress, StateCompleted, StateIncomplete, StateExpired, StateStopped}

// Filter chooses among a tenant's responses; a zero field matches every
// response.
type Filter struct {
	// Questionnaire names the questionnaire ("": any, with Who only).
	Questionnaire string
	State         string
	// RiskLevel matches a response whose risk level is this one or
	// higher (high: high and urgent); a response without risk never
	// matches it.
	RiskLevel string
	// Who is a patient's address (the zero Identity: anyone), as
	// workers.IdentityOf gives it for a channel and a recipient.
	Who consent.Identity
	// Channel matches the responses on this channel, and the web forms
	// whose link went on it.
	Channel string
	// Since and Until bound the creation time: Since ≤ created < Until.
	Since, Until time.Time
	// Before is a response's id (a Page's Next): only the responses
	// created before it.
	Before string
}

// PatientOf reads a patient's address on a channel as the response lists
// take it: to as GET /v1/messages reads its to (ledger.ParseRecipient),
// and of the channel's kind (a phone on sms, an openid on wechat). A bad
// address is an *invalid.Error naming to; channel must be declared.
func PatientOf(channel, to string) (consent.Identity, error) {
	r, err := ledger.ParseRecipient(to)
	if err != nil {
		return consent.Identity{}, invalidField("to", "must be a phone number in international form (with + and the country code), an email address or a WeChat openid")
	}
	if _, ok := channels.SpecOf(channel); !ok {
		return consent.Identity{}, invalidField("channel", "is not a channel")
	}
	who := workers.IdentityOf(channel, r)
	if !who.Valid() {
		return consent.Identity{}, invalidField("to", "is not an address of the channel "+channel)
	}
	return who, nil
}

// Page is a page of responses, newest first. Next, when set, is the
// Before of the next page: more responses may match past it.
type Page struct {
	Responses []*Response
	Next      string
}

// MaxScan is the most responses one Find reads to fill a page: a filter
// that matches few of them returns fewer than asked, with a Next to read
// on from.
const MaxScan = 5000

// scanBatch is how many responses Find reads from Redis at a time.
const scanBatch = 200

// Validate names every bad field of a filter (state, risk_level, since).
func (f Filter) Validate() error {
	var errs invalid.List
	if f.State != "" && !slices.Contains(States, f.State) {
		errs.Add("state", "must be one of %s", strings.Join(States, ", "))
	}
	if f.RiskLevel != "" && LevelRank(f.RiskLevel) == 0 {
		errs.Add("risk_level", "must be one of %s (that level or higher)", strings.Join(Levels, ", "))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		errs.Add("since", "must be before until")
	}
	if f.Questionnaire == "" && !f.Who.Valid() {
		errs.Add("to", "is required: a patient's address")
	}
	return errs.Err()
}

func (f Filter) matches(r *Response) bool {
	switch {
	case f.Questionnaire != "" && r.Questionnaire != f.Questionnaire,
		f.State != "" && r.State != f.State,
		f.RiskLevel != "" && (r.RiskLevel == "" || LevelRank(r.RiskLevel) < LevelRank(f.RiskLevel)),
		f.Channel != "" && r.Channel != f.Channel && r.sendChannel() != f.Channel,
		f.Who.Valid() && consent.Normalise(r.identity()) != consent.Normalise(f.Who),
		!f.Since.IsZero() && r.CreatedAt.Before(f.Since),
		!f.Until.IsZero() && !r.CreatedAt.Before(f.Until):
		return false
	}
	return true
}

// Find lists a tenant's responses that match a filter, newest first, up to
// limit (1 to MaxList). A filter with an address reads the address's
// responses (across questionnaires unless it names one); one without
// reads the questionnaire's. A Before that is not a response of the
// tenant is ErrResponseNotFound; a bad filter an *invalid.Error.
func (s *Service) Find(ctx context.Context, tenant string, f Filter, limit int) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	limit = min(max(limit, 1), MaxList)
	key := listKey(tenant, f.Questionnaire)
	if f.Who.Valid() {
		key = byKey(tenant, f.Who)
	}
	rng := &redis.ZRangeBy{Min: "-inf", Max: "+inf"}
	// The page after Before: the responses made before it, and those made
	// in the same millisecond that sort before it (a sorted set orders
	// equal scores by member, and ids made in one millisecond differ), so
	// paging loses none.
	beforeMS := int64(-1)
	if f.Before != "" {
		b, err := s.GetResponse(ctx, tenant, f.Before)
		if err != nil {
			return Page{}, err
		}
		beforeMS = b.CreatedAt.UnixMilli()
	}
	switch {
	case beforeMS >= 0 && (f.Until.IsZero() || beforeMS < f.Until.UnixMilli()):
		rng.Max = strconv.FormatInt(beforeMS, 10)
	case !f.Until.IsZero():
		rng.Max = "(" + strconv.FormatInt(f.Until.UnixMilli(), 10)
		beforeMS = -1 // until is the tighter bound
	}
	if !f.Since.IsZero() {
		rng.Min = strconv.FormatInt(f.Since.UnixMilli(), 10)
	}
	page := Page{Responses: []*Response{}}
	last := ""
	for scanned := 0; scanned < MaxScan; {
		rng.Offset, rng.Count = int64(scanned), int64(min(scanBatch, MaxScan-scanned))
		zs, err := s.Redis.ZRevRangeByScoreWithScores(ctx, key, rng).Result()
		if err != nil {
			return Page{}, err
		}
		ids := make([]string, 0, len(zs))
		for _, z := range zs {
			id, _ := z.Member.(string)
			if beforeMS >= 0 && int64(z.Score) == beforeMS && id >= f.Before {
				continue // Before itself, or made with it and listed already
			}
			ids = append(ids, id)
		}
		rs, err := s.responses(ctx, tenant, ids)
		if err != nil {
			return Page{}, err
		}
		scanned += len(zs)
		for _, r := range rs {
			last = r.ID
			if !f.matches(r) {
				continue
			}
			page.Responses = append(page.Responses, r)
			if len(page.Responses) == limit {
				page.Next = r.ID
				return page, nil
			}
		}
		if int64(len(zs)) < rng.Count {
			return page, nil // read to the end
		}
	}
	page.Next = last
	return page, nil
}

// responses reads the responses of ids at once, leaving out those past
// the retention.
func (s *Service) responses(ctx context.Context, tenant string, ids []string) ([]*Response, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = respKey(tenant, id)
	}
	vals, err := s.Redis.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*Response, 0, len(vals))
	for _, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // past the retention
		}
		var r Response
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, errors.Join(errors.New("questionnaires: a stored response does not read"), err)
		}
		out = append(out, &r)
	}
	return out, nil
}
