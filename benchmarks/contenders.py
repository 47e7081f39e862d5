"""The three training loops that bench_harness.py times on identical work."""


import torch
import torch.nn.functional as F

from mixbench.train.harness import HarnessBackend, warmup_cosine
from mixbench.train.model import build_model
from mixbench.train.sampler import MixtureSampler


class PlainLoop:
    """A hand-written PyTorch loop: sample, forward, mean loss, backward, clip, AdamW, schedule."""

    def __init__(self, corpus, model, train, mixture):
        self.model = build_model(model, corpus.vocab_size, seed=0)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train["lr"], betas=(0.9, 0.95), weight_decay=train["weight_decay"])
        warmup, total, floor = train["warmup_steps"], train["steps"], train["min_lr_ratio"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: warmup_cosine(step, warmup, total, floor))
        arrays = [corpus.tokens(domain, "train") for domain in corpus.domains]
        self.sampler = MixtureSampler(arrays, model["context"], train["batch_size"], 0, train["sampling"])
        self.mixture, self.clip = mixture, train["grad_clip"]

    def run(self, steps: int) -> None:
        for _ in range(steps):
            tokens, _ = self.sampler.sample(self.mixture)
            batch = torch.from_numpy(tokens)
            logits = self.model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)


class HarnessContender:
    """mixbench's Accelerate harness, trained through its backend protocol."""

    def __init__(self, corpus, model, train, mixture, bf16: bool):
        self.backend = HarnessBackend(corpus, corpus.domains, model, dict(train, bf16=bf16), seed=0)
        self.mixture = mixture

    def run(self, steps: int) -> None:
        self.backend.train(steps, self.mixture)


class _Windows(torch.utils.data.IterableDataset):
    def __init__(self, sampler, mixture):
        self.sampler, self.mixture = sampler, mixture

    def __iter__(self):
        while True:
            tokens, _ = self.sampler.sample(self.mixture)
            for row in tokens:
                window = torch.from_numpy(row)
                yield {"input_ids": window[:-1], "labels": window[:-1]}


class TrainerContender:
    """transformers' Trainer on the same windows (its labels are the inputs, shifted inside the model)."""

    def __init__(self, corpus, model, train, mixture):
        import tempfile

        from transformers import Trainer, TrainingArguments

        arrays = [corpus.tokens(domain, "train") for domain in corpus.domains]
        # Trainer predicts context - 1 tokens per window of `context` inputs; the other two predict
        # `context`. The rate is computed from `context` for all three, a difference under 1%.
        sampler = MixtureSampler(arrays, model["context"], train["batch_size"], 0, train["sampling"])
        self.model = build_model(model, corpus.vocab_size, seed=0)
        self.arguments = dict(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=train["batch_size"],
            learning_rate=train["lr"],
            weight_decay=train["weight_decay"],
            adam_beta2=0.95,
            max_grad_norm=train["grad_clip"],
            lr_scheduler_type="cosine",
            warmup_steps=train["warmup_steps"],
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        self.dataset = _Windows(sampler, mixture)
        self.trainer_class, self.arguments_class = Trainer, TrainingArguments

    def run(self, steps: int) -> None:
        arguments = self.arguments_class(max_steps=steps, **self.arguments)
        trainer = self.trainer_class(model=self.model, args=arguments, train_dataset=self.dataset)
        trainer.train()
