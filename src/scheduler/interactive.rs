//! Interactive chat completions (`POST /v1/chat/completions`): a person waits for each, so
//! they run ahead of batch work, and they are not stored jobs (as OpenAI's synchronous API's
//! are not): nothing is written for them, a crash forgets them, `list` and `batches` do not
//! show them; `status` shows those in flight and counts those served.
//!
//! They reach the loop through [`Signals::submit_chat`](super::Signals::submit_chat) (a queue
//! of their own, which wakes the loop) and answer through a channel of [`ChatEvent`]s. The
//! loop's step **serve chats** (between steer and fill) starts each waiting one:
//! - its model is the batch's: it takes a free slot at the next decode, or, when every slot is
//!   busy, the batch's youngest sequence yields its slot (its step goes back to the job's
//!   list and starts again from the job's last checkpoint when a slot frees: no attempt is
//!   counted, nothing stored changes; greedy or seeded, it gives the same answer);
//! - another model (or none): the batch yields — its jobs go back to the queue, keeping
//!   their checkpoints, costing no attempt — and the chat's model loads through the memory
//!   gate; the jobs are claimed again once no chat is left.
//!
//! Its prompt is fed before batch prompts (`SeqRequest::urgent`). After every decode the step
//! **stream chats** sends what each generated since the last step (whole characters, never
//! the start of a stop string), split into reasoning and answer ([`reasoning::Split`]: the
//! pieces streamed add up to the answer a non-streamed request gets), and a chat whose
//! sequence a reshaped or failed batch dropped starts again (or, when part of it was shown
//! already, fails: it cannot be taken back).

use std::time::Instant;

use super::batch::Batch;
use super::chat::{ChatAnswer, ChatEvent, ChatFailure, ChatRequest, Running, PROMPT_CAP};
use super::record::Stop;
use super::Worker;
use crate::engine::reasoning;
use crate::engine::templates::with_thinking;
use crate::engine::{EngineError, Interrupt, SeqRequest, Shape};
use crate::queue::StoreError;

impl Worker {
    /// The step **serve chats** (see the module docs): take the chats submitted since the last
    /// step, drop those whose client left, start the waiting ones in order.
    pub(super) fn serve_chats(&mut self, b: &mut Batch) -> Result<(), StoreError> {
        let came = self.signals.take_chats();
        if !came.is_empty() {
            b.chats.last_active = Some(Instant::now());
        }
        b.chats.waiting.extend(came);
        b.chats.waiting.retain(|c| !c.reply.is_closed());
        self.engine
            .set_prompt_cap(b.chats.conversing().then_some(PROMPT_CAP));
        let left: Vec<u64> = (b.chats.running.iter())
            .filter(|(_, r)| r.request.reply.is_closed())
            .map(|(&t, _)| t)
            .collect();
        for tag in left {
            self.engine.abort(tag);
            b.chats.running.remove(&tag);
            tracing::info!(tag, "chat abandoned by its client");
        }
        while let Some(chat) = b.chats.waiting.front() {
            let busy = self.engine.active() > 0;
            // A suspect of a crash runs alone: chats wait for it to end.
            if b.alone && busy {
                return Ok(());
            }
            let on_loaded = self
                .engine
                .loaded()
                .is_some_and(|m| m.same_model(&chat.model))
                && self.engine.context().is_some();
            if on_loaded {
                if self.engine.free_slots() == 0 && !self.preempt(b) {
                    // Every slot is a chat's: the next one to end frees one.
                    return Ok(());
                }
            } else if !b.chats.running.is_empty() {
                // Chats of the loaded model end first.
                return Ok(());
            } else if let Err(why) = self.switch_for_chat(b)? {
                let chat = b.chats.waiting.pop_front().expect("a chat waits");
                let _ = chat.reply.send(ChatEvent::Failed(why));
                continue;
            }
            let chat = b.chats.waiting.pop_front().expect("a chat waits");
            self.start_chat(b, chat);
        }
        Ok(())
    }

    /// The batch's youngest sequence gives its slot up: its step starts again later (from the
    /// job's last checkpoint). False when no batch sequence is in flight.
    fn preempt(&mut self, b: &mut Batch) -> bool {
        let Some(tag) = b.tags.keys().copied().max() else {
            return false;
        };
        let (id, step) = b.tags.remove(&tag).expect("the tag is the batch's");
        self.engine.abort(tag);
        if let Some(run) = b.runs.iter_mut().find(|r| r.job.id == id) {
            run.dropped(step);
        }
        b.preempted += 1;
        tracing::debug!(job = %id, step, "yielded its slot to a chat");
        true
    }

    /// The chat at the front needs another model (or none is loaded): the batch's jobs go back
    /// to the queue (their checkpoints kept, no attempt counted), and the model loads through
    /// the memory gate: at the batch's shape, else one sequence, else with the other models
    /// unloaded. A store error (releasing a job) stops the worker, as everywhere in the loop.
    fn switch_for_chat(&mut self, b: &mut Batch) -> Result<Result<(), ChatFailure>, StoreError> {
        let model = b.chats.waiting.front().expect("a chat waits").model.clone();
        if !b.runs.is_empty() {
            tracing::info!(model = %model.name, jobs = b.runs.len(), "the batch yields to a chat on another model");
            for run in std::mem::take(&mut b.runs) {
                let stop = Stop::Engine(EngineError::Interrupted(Interrupt::Yield));
                self.record_stop(b, run, stop)?;
            }
        }
        let shapes = [self.settings.parallel.max(1), 1].map(|n_seq| Shape {
            n_ctx: self.settings.n_ctx,
            n_seq,
        });
        let mut last = ChatFailure::unavailable(&format!("no memory for {} now", model.name));
        for evict in [false, true] {
            if evict && self.engine.free_memory(u64::MAX) == 0 {
                break;
            }
            for shape in shapes {
                let loaded = match self.gate(&model, shape, true) {
                    Ok(()) => self.engine.load(&model, shape, (self.now)()),
                    Err(refused) => {
                        last = ChatFailure::unavailable(&format!("{}: {refused}", model.name));
                        continue;
                    }
                };
                match loaded {
                    Ok(info) => {
                        (b.n_seq, b.n_ctx) = (info.n_seq, info.n_ctx);
                        if let Some(record) = &info.memory {
                            self.store.record_memory(&model.path, record)?;
                        }
                        return Ok(Ok(()));
                    }
                    Err(e) if e.is_memory() => last = ChatFailure::of(&e),
                    Err(e) => return Ok(Err(ChatFailure::of(&e))),
                }
            }
        }
        Ok(Err(last))
    }

    /// Start a chat on the loaded model, in a free slot.
    fn start_chat(&mut self, b: &mut Batch, chat: ChatRequest) {
        let shape = self.engine.context().expect("a context");
        let loaded = self.engine.loaded().cloned().expect("a model");
        let prompt = self
            .engine
            .load(&loaded, shape, (self.now)())
            .and_then(|info| {
                let rendered = self.engine.render(&chat.messages)?;
                Ok(with_thinking(
                    rendered,
                    chat.thinking,
                    info.thinking_template,
                ))
            });
        // A template that opens the thinking block for the model: its text starts as reasoning.
        let opened = prompt
            .as_ref()
            .is_ok_and(|p| p.text().trim_end().ends_with("<think>"));
        let request = prompt.map(|prompt| {
            let tag = b.next_tag();
            SeqRequest {
                tag,
                prompt,
                sampling: chat.sampling.clone(),
                grammar: chat.grammar.clone(),
                stop: chat.stop.clone(),
                urgent: true,
            }
        });
        let started = request.and_then(|r| {
            let tag = r.tag;
            self.engine.start(r).map(|()| tag)
        });
        match started {
            Ok(tag) => {
                tracing::info!(tag, model = %chat.model.name, waited_ms = chat.received.elapsed().as_millis() as u64, "chat started");
                b.chats.running.insert(
                    tag,
                    Running {
                        request: chat,
                        got: Vec::new(),
                        sent: 0,
                        split: reasoning::Split::new(opened),
                    },
                );
            }
            Err(e) => {
                let _ = chat.reply.send(ChatEvent::Failed(ChatFailure::of(&e)));
            }
        }
    }

    /// A chat's sequence ended: its answer.
    pub(super) fn chat_ended(
        &mut self,
        b: &mut Batch,
        tag: u64,
        result: Result<crate::engine::Generation, EngineError>,
    ) {
        let Some(mut run) = b.chats.running.remove(&tag) else {
            return;
        };
        b.chats.last_active = Some(Instant::now());
        let event = match result {
            Ok(g) => {
                b.chats.served += 1;
                // The rest of the text (all of it when not streamed), then what was held back.
                if let Some(rest) = g.text.get(run.sent.min(g.text.len())..) {
                    run.show(rest);
                }
                let mut pieces = Vec::new();
                let (reasoning, answer) = run.split.finish(&mut pieces);
                run.request.deltas(pieces);
                ChatEvent::Done(ChatAnswer {
                    answer,
                    reasoning,
                    // The name it asked for (the batch's jobs may call the file otherwise).
                    model: run.request.model.name.clone(),
                    prompt_tokens: g.prompt_tokens,
                    cached_tokens: g.cached_tokens,
                    completion_tokens: g.completion_tokens,
                    finish: g.finish,
                })
            }
            Err(e) => ChatEvent::Failed(ChatFailure::of(&e)),
        };
        let _ = run.request.reply.send(event);
    }

    /// The step **stream chats**: after a decode, send what each streaming chat generated,
    /// and start again the chats whose sequences were dropped (a failed or reshaped batch).
    pub(super) fn stream_chats(&mut self, b: &mut Batch) {
        let mut lost = Vec::new();
        for (&tag, run) in b.chats.running.iter_mut() {
            let Some(more) = self.engine.partial(tag, run.got.len()) else {
                lost.push(tag);
                continue;
            };
            run.got.extend_from_slice(&more);
            if !run.request.stream {
                continue;
            }
            let show = crate::engine::stops::showable(&run.got, &run.request.stop);
            if show > run.sent {
                let text = String::from_utf8_lossy(&run.got[run.sent..show]).into_owned();
                run.sent = show;
                run.show(&text);
            }
        }
        for tag in lost {
            let run = b.chats.running.remove(&tag).expect("listed above");
            if run.split.shown() {
                let why = "the batch was reshaped while the answer streamed; ask again";
                let _ = (run.request.reply).send(ChatEvent::Failed(ChatFailure::unavailable(why)));
            } else {
                tracing::info!(tag, "a chat's sequence was dropped: starting it again");
                b.chats.waiting.push_front(run.request);
            }
        }
    }

    /// Shutdown: every chat is told the worker stops.
    pub(super) fn end_chats(&mut self, b: &mut Batch) {
        let why = ChatFailure::unavailable("the worker is stopping");
        b.chats.waiting.extend(self.signals.close_chats());
        for chat in b.chats.waiting.drain(..) {
            let _ = chat.reply.send(ChatEvent::Failed(why.clone()));
        }
        for (tag, run) in b.chats.running.drain() {
            self.engine.abort(tag);
            let _ = run.request.reply.send(ChatEvent::Failed(why.clone()));
        }
    }
}
