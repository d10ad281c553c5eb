import flordb as flor

total = 0
for step in flor.loop("step", range(100)): total += train_step(step); flor.log("running", total)
flor.log("total", total)
