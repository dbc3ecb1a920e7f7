package scanner

import "github.com/cnvrg/capsule/schedule"

// Schedule is a plan's schedule (the schedule package's, shared with the
// worker's own plans).
type Schedule = schedule.Schedule

// MinPeriod is the shortest period a plan may have.
const MinPeriod = schedule.MinPeriod

// ParseSchedule reads a period or a cron expression (schedule.Parse).
func ParseSchedule(spec string) (Schedule, error) { return schedule.Parse(spec) }
