package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/modelreg/modelreg/pkg/wire"
)

// Refusal is a stage move the registry refused (its access policy or its
// gate): who tried to move which stage to what, when, and why it was
// refused. Auditors ask for the attempts, not only the moves.
type Refusal struct {
	Time   time.Time `json:"time"`
	Stage  string    `json:"stage"`
	Digest string    `json:"digest,omitempty"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason"`
}

// AddRefusals puts the registry's refused stage moves (its
// promotion.refused events, oldest first) in the report; a registry
// that keeps no events (not modelreg serve) has none to add.
func (r *Report) AddRefusals(rs []Refusal) {
	r.Refused = append(r.Refused, rs...)
}

func (r *Report) markdownRefused(w io.Writer) {
	if len(r.Refused) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Refused stage moves\n\n| time | stage | version | actor | why |\n| --- | --- | --- | --- | --- |\n")
	for _, x := range r.Refused {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.Time.Format(time.RFC3339), x.Stage, short(x.Digest), cell(x.Actor), cell(x.Reason))
	}
}

// cell keeps text inside one Markdown table cell.
func cell(s string) string {
	out := []rune{}
	for _, c := range s {
		switch c {
		case '|':
			out = append(out, '\\', '|')
		case '\n', '\r':
			out = append(out, ' ')
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// RefusalsFrom reads refusals from promotion.refused events (the model
// API's event log), skipping the other types.
func RefusalsFrom(evs []wire.Event) []Refusal {
	var out []Refusal
	for _, e := range evs {
		if e.Type != wire.EventPromotionRefused {
			continue
		}
		var d wire.EventData
		if json.Unmarshal(e.Data, &d) != nil {
			continue
		}
		out = append(out, Refusal{Time: e.Time, Stage: d.Stage, Digest: d.Digest, Actor: d.Actor, Reason: d.Reason})
	}
	return out
}
