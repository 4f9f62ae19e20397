package broadcasts

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// RepairReport says what a repair pass found and fixed.
type RepairReport struct {
	// People is how many people were checked.
	People int `json:"people"`
	// Statuses is how many tries took their message's status from the
	// ledger (a delivery report that reached the message but not the
	// roster).
	Statuses int `json:"statuses"`
	// MovedOn is how many people whose message failed were moved to their
	// next channel (the move was lost).
	MovedOn int `json:"moved_on"`
	// Requeued is how many people marked queued had no send task and got
	// one again.
	Requeued int `json:"requeued"`
}

// Fixed is how many things the pass fixed.
func (r RepairReport) Fixed() int { return r.Statuses + r.MovedOn + r.Requeued }

// RepairAfter is how long a queued try may go without a ledger record
// before the repair pass makes sure its send task exists: a task waiting in
// a busy queue has no record yet either.
const RepairAfter = 30 * time.Second

// Repair brings a broadcast's roster back in line with its messages: each
// try takes its message's status from the ledger when the roster missed
// it, a person whose message failed moves on, and a person marked queued
// whose send task is gone gets it again. Every step is one the normal
// paths would have taken, so a pass over a healthy roster changes nothing.
// The sweep runs it once when a broadcast goes quiet; the API runs it on
// demand.
func (e *Engine) Repair(ctx context.Context, id string) (RepairReport, error) {
	var r RepairReport
	cfg, err := e.broadcastConfig(ctx, id)
	if err != nil {
		return r, err
	}
	now := e.Now()
	var people []*Person
	err = e.Store.Scan(ctx, id, func(p *Person) error {
		people = append(people, p)
		return nil
	})
	if err != nil {
		return r, err
	}
	for _, p := range people {
		r.People++
		link := id + ":" + strconv.Itoa(p.Index)
		for i := range p.Tries {
			t := &p.Tries[i]
			if t.MessageID == "" {
				continue
			}
			m, err := e.Bulk.Ledger.Get(ctx, cfg.Tenant, t.MessageID)
			switch {
			case errors.Is(err, ledger.ErrNotFound):
				if i != len(p.Tries)-1 || p.Done() || t.Status != string(ledger.StatusQueued) || now.Sub(t.At) < RepairAfter {
					continue
				}
				req, rerr := e.tryRequest(ctx, cfg, p, t)
				if rerr != nil {
					if err := e.refused(ctx, cfg, p.Index, t, rerr); err != nil {
						return r, err
					}
					r.MovedOn++
					continue
				}
				queued, err := e.Messages.EnsureQueued(ctx, e.Bulk.Queue, t.MessageID, req)
				if err != nil {
					return r, err
				}
				if queued {
					r.Requeued++
				}
				continue
			case err != nil:
				return r, err
			}
			behind := m.Status != ledger.Status(t.Status) && m.Status.Rank() >= ledger.Status(t.Status).Rank()
			stuck := i == len(p.Tries)-1 && !p.Done() && failure(m.Status)
			if !behind && !stuck {
				continue
			}
			if err := e.Status(ctx, link, t.MessageID, m.Status); err != nil {
				return r, err
			}
			if behind {
				r.Statuses++
			} else {
				r.MovedOn++
			}
		}
	}
	if r.Fixed() > 0 {
		e.log().Warn("broadcast roster repaired", "broadcast_id", id, "people", r.People, "statuses", r.Statuses,
			"moved_on", r.MovedOn, "requeued", r.Requeued)
	}
	return r, nil
}
