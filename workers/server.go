package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ServerConfig sizes the worker pools.
type ServerConfig struct {
	// Concurrency serves high, normal and bulk, weighted 6:3:1.
	Concurrency int
	// CrisisConcurrency serves only the crisis queue, so crisis traffic
	// never waits for a worker busy with other priorities.
	CrisisConcurrency int
	// ReplyConcurrency serves only QueueReplies: filing patients' answers
	// never waits behind any sending, a crisis broadcast's included
	// (0: DefaultReplyConcurrency).
	ReplyConcurrency    int
	ShutdownTimeout     time.Duration
	PollInterval        time.Duration
	DelayedPollInterval time.Duration
	Logger              *slog.Logger
}

// QueueReplies is the queue of patients' answers to file; no send uses it.
const QueueReplies = "gw:replies"

// DefaultReplyConcurrency is the size of the pool that files answers.
const DefaultReplyConcurrency = 16

// Server runs the handlers in three pools: one for patients' answers only,
// a crisis-only pool, and a weighted pool for the other priorities.
// (Asynq offers strict or weighted priority per server, not both; separate
// servers give answers and crisis precedence over everything and the rest
// weighted shares.)
type Server struct {
	pools []*asynq.Server
	mux   *asynq.ServeMux
}

// Handlers are the task handlers a worker server runs.
type Handlers struct {
	Send asynq.Handler
	// Recording fetches call recordings; nil when no blob store is set up.
	Recording asynq.Handler
	// Webhook delivers events to the clinics' endpoints (nil: none).
	Webhook asynq.Handler
	// Escalation re-escalates unacknowledged urgent replies (nil: none).
	Escalation asynq.Handler
	// Inbound files patients' answers (nil: none).
	Inbound asynq.Handler
	// Broadcast fans broadcasts out and moves people along their cascade
	// (nil: none).
	Broadcast asynq.Handler
	// Questionnaire reminds silent patients and expires responses (nil: none).
	Questionnaire asynq.Handler
	// Incident tells the clinic of an incident's missed update (nil: none).
	Incident asynq.Handler
	// Followup starts the questionnaires of follow-up plans' steps when
	// they are due (nil: none).
	Followup asynq.Handler
	// Erasure erases patients' data on request (nil: none).
	Erasure asynq.Handler
}

// NewServer builds the worker server; channelNames are the channels it sends on.
func NewServer(rdb redis.UniversalClient, h Handlers, channelNames []string, cfg ServerConfig) *Server {
	log := cfg.Logger.With("comp", "worker")
	mux := asynq.NewServeMux()
	for _, name := range channelNames {
		mux.Handle(TypeSend(name), h.Send)
	}
	if h.Recording != nil {
		mux.Handle(TypeFetchRecording, h.Recording)
	}
	if h.Webhook != nil {
		mux.Handle("webhook:deliver", h.Webhook)
	}
	if h.Escalation != nil {
		mux.Handle("escalation:check", h.Escalation)
	}
	if h.Inbound != nil {
		mux.Handle(TypeInboundReply, h.Inbound)
		mux.Handle(TypeLateReport, h.Inbound)
	}
	if h.Broadcast != nil {
		mux.Handle("broadcast:", h.Broadcast) // fanout, sweep, cancel
	}
	if h.Questionnaire != nil {
		mux.Handle(TypeQuestionnaireTimer, h.Questionnaire)
	}
	if h.Incident != nil {
		mux.Handle(TypeIncidentDue, h.Incident)
	}
	if h.Followup != nil {
		mux.Handle(TypeFollowupStep, h.Followup)
	}
	if h.Erasure != nil {
		mux.Handle(TypeErasure, h.Erasure)
	}
	mux.Use(recoverMiddleware(log))
	base := asynq.Config{
		RetryDelayFunc:           RetryDelay,
		IsFailure:                IsFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.DelayedPollInterval,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
	}
	crisis := base
	crisis.Concurrency = cfg.CrisisConcurrency
	crisis.Queues = map[string]int{QueueFor(PriorityCrisis): 1}
	main := base
	main.Concurrency = cfg.Concurrency
	main.Queues = weightedQueues
	answers := base
	answers.Concurrency = cfg.ReplyConcurrency
	if answers.Concurrency <= 0 {
		answers.Concurrency = DefaultReplyConcurrency
	}
	answers.Queues = map[string]int{QueueReplies: 1}
	return &Server{mux: mux, pools: []*asynq.Server{
		asynq.NewServerFromRedisClient(rdb, answers),
		asynq.NewServerFromRedisClient(rdb, crisis),
		asynq.NewServerFromRedisClient(rdb, main),
	}}
}

// Start starts the pools.
func (s *Server) Start() error {
	for i, p := range s.pools {
		if err := p.Start(s.mux); err != nil {
			for _, started := range s.pools[:i] {
				started.Shutdown()
			}
			return err
		}
	}
	return nil
}

// Shutdown stops taking tasks, lets in-flight sends finish within the
// shutdown timeout, and puts unfinished tasks back in their queue.
func (s *Server) Shutdown() {
	done := make(chan struct{}, len(s.pools))
	for _, p := range s.pools {
		go func() { p.Shutdown(); done <- struct{}{} }()
	}
	for range s.pools {
		<-done
	}
}

func recoverMiddleware(log *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.Error("send handler panicked", "task", t.Type(), "panic", fmt.Sprint(r))
					err = errors.New("handler panic")
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}

// asynqLogger routes Asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)); os.Exit(1) }
