package workers

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// TypeIncidentDue is the timer that fires when an incident's next update
// is due: if none was sent, the clinic is told it is overdue.
const TypeIncidentDue = "incident:due"

// IncidentDue names the incident and the update due time (Unix ms).
type IncidentDue struct {
	Tenant   string `json:"t"`
	Incident string `json:"i"`
	DueMS    int64  `json:"d"`
}

// NewIncidentDueTask builds the timer, run after in; its id is derived
// from the incident and the due time, so it is queued once.
func NewIncidentDueTask(p IncidentDue, in time.Duration) (*asynq.Task, error) {
	if p.Tenant == "" || p.Incident == "" || p.DueMS <= 0 {
		return nil, fmt.Errorf("workers: an incident timer needs a tenant, an incident and a due time")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeIncidentDue, b, asynq.TaskID("inc:"+p.Incident+":"+strconv.FormatInt(p.DueMS, 10)),
		asynq.Queue(QueueFor(PriorityHigh)), asynq.ProcessIn(in), asynq.MaxRetry(20), asynq.Timeout(time.Minute)), nil
}

// IncidentHandler runs TypeIncidentDue tasks: it hands the timer to Fire
// (package incidents' Service.Due).
type IncidentHandler = Timer[IncidentDue]
