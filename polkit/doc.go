// Package polkit holds the polkit rule that lets the shell helper open
// login shells through machined. No Go code: its test evaluates the rule
// with node against fake actions and subjects.
package polkit
