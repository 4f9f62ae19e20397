package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// TaskLister lists and deletes tasks (an *asynq.Inspector).
type TaskLister interface {
	Queues() ([]string, error)
	ListPendingTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListScheduledTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListRetryTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListArchivedTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListCompletedTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
}

// EraseTasks deletes the tasks waiting, scheduled, retrying, archived or
// kept completed in any queue whose payload match says holds a patient's
// data (an erasure): a clinic event about them, a reply of theirs to
// file, a timer of theirs. Send tasks are left alone: they carry no
// personal data, and the ledger decides what a send does. A task running
// now cannot be deleted; it is found when the erasure runs again. It
// returns how many it deleted.
func EraseTasks(tasks TaskLister, match func(payload []byte) bool) (int, error) {
	queues, err := tasks.Queues()
	if err != nil {
		return 0, err
	}
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		tasks.ListPendingTasks, tasks.ListScheduledTasks, tasks.ListRetryTasks, tasks.ListArchivedTasks, tasks.ListCompletedTasks,
	}
	n := 0
	var errs []error
	for _, q := range queues {
		var found []string
		for _, list := range lists {
			for page := 1; ; page++ {
				infos, err := list(q, asynq.PageSize(500), asynq.Page(page))
				if err != nil {
					errs = append(errs, err)
					break
				}
				for _, t := range infos {
					if !strings.HasPrefix(t.Type, TypeSendPrefix) && match(t.Payload) {
						found = append(found, t.ID)
					}
				}
				if len(infos) < 500 {
					break
				}
			}
		}
		for _, id := range found {
			if err := tasks.DeleteTask(q, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				errs = append(errs, err)
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// TypeErasure is the task that erases a patient's data (package erasure).
const TypeErasure = "erasure:run"

// ErasureRun names an erasure to run (or to resume): its progress is in
// Redis, never in the task, which holds no personal data.
type ErasureRun struct {
	Tenant string `json:"t"`
	ID     string `json:"e"`
}

// NewErasureTask builds the task of an erasure, queued once by its id and
// retried until it completes.
func NewErasureTask(p ErasureRun) (*asynq.Task, error) {
	if p.Tenant == "" || p.ID == "" {
		return nil, fmt.Errorf("workers: an erasure task needs a tenant and an id")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeErasure, b, asynq.TaskID("er:"+p.ID), asynq.Queue(QueueFor(PriorityHigh)),
		asynq.MaxRetry(25), asynq.Timeout(15*time.Minute)), nil
}

// ErasureHandler runs TypeErasure tasks: it hands them to Fire (package
// erasure's Service.Run).
type ErasureHandler = Timer[ErasureRun]
