package workers

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// A worker process that dies (killed, its machine lost) holds the tasks it
// had taken: Asynq gives them back only once their lease has lapsed for
// another 30 s, found by a check that runs every minute, and then as a
// retry after its delay: 60 to 120 s and more after the death. For a
// crisis broadcast that is too long. RequeueOrphans queues a copy of
// each send whose lease has lapsed (no live worker has extended it for
// 30 s) as soon as it is seen. The ledger makes the copy safe: a message
// the dead worker handed to the provider is not sent again (its claim
// finds it accepted, or waits out the grace period and asks the
// provider), and the original, once Asynq gives it back, finds the
// message sent by the copy and does nothing.

// OrphanSuffix ends the task id of a send's copy.
const OrphanSuffix = ":again"

// orphanRetention keeps a copy's task id taken once it has run, past the
// time Asynq needs to give the original back: the original, seen orphaned
// until then, is not copied twice.
const orphanRetention = 10 * time.Minute

// OrphanCheckEvery is how often the workers look for orphaned sends (one
// process of the gateway each time).
const OrphanCheckEvery = 5 * time.Second

// RequeueOrphans queues a copy of every send task in queues whose lease
// has lapsed, and returns the ids of the messages it queued again. A copy
// already queued is not queued twice.
func RequeueOrphans(ctx context.Context, insp *asynq.Inspector, q interface {
	EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error)
}, queues []string) ([]string, error) {
	var ids []string
	var errs []error
	for _, queue := range queues {
		for page := 1; ; page++ {
			tasks, err := insp.ListActiveTasks(queue, asynq.PageSize(100), asynq.Page(page))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			} else if err != nil {
				errs = append(errs, err)
				break
			}
			for _, t := range tasks {
				if !t.IsOrphaned || !strings.HasPrefix(t.Type, TypeSendPrefix) {
					continue
				}
				opts := []asynq.Option{asynq.Queue(t.Queue), asynq.TaskID(t.ID + OrphanSuffix),
					asynq.MaxRetry(max(t.MaxRetry-t.Retried, 0)), asynq.Retention(orphanRetention)}
				if t.Timeout > 0 {
					opts = append(opts, asynq.Timeout(t.Timeout))
				}
				_, err := q.EnqueueContext(ctx, asynq.NewTaskWithHeaders(t.Type, t.Payload, t.Headers), opts...)
				switch {
				case errors.Is(err, asynq.ErrTaskIDConflict):
				case err != nil:
					errs = append(errs, err)
				default:
					ids = append(ids, strings.TrimSuffix(t.ID, OrphanSuffix))
				}
			}
			if len(tasks) < 100 {
				break
			}
		}
	}
	return ids, errors.Join(errs...)
}
