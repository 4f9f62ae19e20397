package incidents

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// EventOverdue tells the clinic's webhook that an open incident's update
// is past due.
const EventOverdue = "incident.update_overdue"

// Service opens and closes incidents, links broadcasts to them (the
// broadcast engine's Incidents) and keeps the timer of each one's next
// update.
type Service struct {
	*Store
	// Queue queues the due-update timers (required).
	Queue messaging.Enqueuer
	// Events tells the clinic of a missed update (nil: nobody).
	Events *webhooks.Publisher
	Logger *slog.Logger
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Open starts an incident, with the timer of its first update.
func (s *Service) Open(ctx context.Context, tenant, name, cadence string) (*Incident, error) {
	inc, err := s.Store.Open(ctx, tenant, name, cadence)
	if err != nil {
		return nil, err
	}
	if err := s.schedule(ctx, inc, inc.NextDue()); err != nil {
		return nil, err
	}
	s.log().Info("incident opened", "tenant", tenant, "incident_id", inc.ID, "cadence", inc.Cadence)
	return inc, nil
}

// Link records a broadcast as the incident's latest update and sets the
// timer of the next one.
func (s *Service) Link(ctx context.Context, tenant, id, broadcast string, at time.Time) error {
	if err := s.Store.Link(ctx, tenant, id, broadcast, at); err != nil {
		return err
	}
	inc, err := s.Store.Get(ctx, tenant, id)
	if err != nil {
		return err
	}
	return s.schedule(ctx, inc, inc.NextDue())
}

// schedule queues the timer for the update due at due (none when zero).
func (s *Service) schedule(ctx context.Context, inc *Incident, due time.Time) error {
	if due.IsZero() {
		return nil
	}
	task, err := workers.NewIncidentDueTask(workers.IncidentDue{Tenant: inc.Tenant, Incident: inc.ID, DueMS: due.UnixMilli()},
		max(due.Sub(s.Now()), 0))
	if err != nil {
		return err
	}
	if _, err := s.Queue.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	return nil
}

// overdueEvent is the data of incident.update_overdue.
type overdueEvent struct {
	IncidentID   string    `json:"incident_id"`
	Name         string    `json:"name"`
	DueAt        time.Time `json:"due_at"`
	LastUpdateAt time.Time `json:"last_update_at"`
	Broadcasts   int       `json:"broadcasts"`
}

// Due runs an incident's timer: when the update due then was not sent,
// the clinic is told, at least once (the event is queued before it is
// recorded as told, and a timer that fails runs again; a redelivery keeps
// its event id), and the timer is set again a cadence later, so every
// missed update is told.
func (s *Service) Due(ctx context.Context, p workers.IncidentDue) error {
	due := time.UnixMilli(p.DueMS).UTC()
	missed, inc, err := s.Store.Missed(ctx, p.Tenant, p.Incident, due)
	if errors.Is(err, ErrNotFound) {
		return nil // expired
	} else if err != nil {
		return err
	}
	if inc.NextDue().IsZero() || due.Before(inc.NextDue()) {
		return nil // closed or updated: the new timer is set
	}
	if missed {
		s.log().Warn("an incident's update is overdue", "tenant", p.Tenant, "incident_id", inc.ID, "due_at", due)
		if err := s.Events.Enqueue(ctx, p.Tenant, EventOverdue, overdueEvent{IncidentID: inc.ID, Name: inc.Name, DueAt: due,
			LastUpdateAt: inc.LastUpdateAt, Broadcasts: len(inc.Broadcasts)}, "", "incident-"+inc.ID+"-"+due.Format("20060102T150405.000")); err != nil {
			return err
		}
		if err := s.Store.Told(ctx, inc.ID, due); err != nil {
			return err
		}
	}
	return s.schedule(ctx, inc, due.Add(inc.Cadence))
}
