package ui

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/wire"
)

// EventsPage is the event log with each event's deliveries: what an
// operator reads when a receiver says it missed something.
type EventsPage struct {
	Title, Query string
	Viewer       Viewer
	// Repository and Type are the filters applied ("" for all).
	Repository, Type string
	Types            []string
	Events           []EventRow
	// Next is the seq to continue after, 0 at the end.
	Next int64
}

// EventRow is one event as the page shows it.
type EventRow struct {
	Seq        int64
	ID         string
	Type       string
	Subject    string
	Repository string
	Time       string
	Data       wire.EventData
	Deliveries []wire.Delivery
}

// NewEventsPage builds the page from the model API's answer.
func NewEventsPage(evs wire.Events, repo, typ string) EventsPage {
	pg := EventsPage{Title: "Events", Repository: repo, Type: typ, Next: evs.Next}
	for _, t := range wire.EventTypes {
		pg.Types = append(pg.Types, strings.TrimPrefix(t, "dev.modelreg."))
	}
	for _, e := range evs.Events {
		r := EventRow{Seq: e.Seq, ID: e.ID, Type: strings.TrimPrefix(e.Type, "dev.modelreg."), Subject: e.Subject,
			Time: e.Time.Format(time.RFC3339), Deliveries: e.Deliveries}
		json.Unmarshal(e.Data, &r.Data)
		r.Repository = r.Data.Repository
		pg.Events = append(pg.Events, r)
	}
	return pg
}
