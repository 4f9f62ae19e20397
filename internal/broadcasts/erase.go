package broadcasts

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/consent"
)

// Erase blanks, in every broadcast of the tenant, the people with any of
// the identities: each keeps their tries, state and answer (the roster and
// the report still add up) but loses their addresses, language, zone and
// external id. A person not done yet is canceled, so nothing more is sent
// to them. It returns how many people it blanked; erasing again blanks
// nothing more. A report this process computed before is dropped; one
// another process keeps is reused for at most ReportFresh.
func (s *Store) Erase(ctx context.Context, tenant string, ids []consent.Identity) (int, error) {
	want := map[consent.Identity]bool{}
	var values []string
	for _, id := range ids {
		n := consent.Normalise(id)
		want[n] = true
		values = append(values, n.Value, id.Value)
	}
	bids, err := s.rdb.ZRange(ctx, tenantKey(tenant), 0, -1).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, bid := range bids {
		var hits []int
		it := s.rdb.HScan(ctx, peopleKey(bid), 0, "", 1000).Iterator()
		for it.Next(ctx) {
			field := it.Val()
			if !it.Next(ctx) {
				break
			}
			doc := it.Val()
			if !containsAny(doc, values) {
				continue
			}
			var p Person
			if json.Unmarshal([]byte(doc), &p) != nil {
				continue
			}
			for _, i := range p.To.Identities() {
				if want[i] {
					idx, _ := strconv.Atoi(field)
					hits = append(hits, idx)
					break
				}
			}
		}
		if err := it.Err(); err != nil {
			return n, err
		}
		for _, idx := range hits {
			_, err := s.Update(ctx, bid, idx, func(p *Person) (*Event, bool) {
				if p.To == (audiences.Recipient{}) {
					return nil, false
				}
				p.To = audiences.Recipient{}
				if !p.Done() {
					p.State, p.Deadline = PersonCanceled, nil
				}
				return nil, true
			})
			if err != nil {
				return n, err
			}
			n++
		}
		if len(hits) > 0 {
			s.reports.drop(bid)
		}
	}
	return n, nil
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
