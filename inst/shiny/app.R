# A Shiny app that stays responsive while a slow computation runs in a mirai,
# with a progress bar that moves as the computation goes.
#
# Run it with: shiny::runApp(system.file("shiny", package = "mirai"))
#
# The button sends a slow computation to a daemon as a mirai. Its result
# reaches the page through a promise (`mirai(...) %...>% f`), so the R process
# serving the app is never blocked: the clock keeps ticking, in this session
# and in every other one, while the computation runs. The computation reports
# each of its steps with message(); the daemons relay such messages to the
# app as they happen (`relay = TRUE`), and on_relay() hands this mirai's to a
# function that moves this session's progress bar.

library(shiny)
library(promises)
library(mirai)

# Two background R processes for the whole app, shared by all sessions;
# stopped when the app stops. They relay tasks' messages while tasks run.
daemons(2, relay = TRUE)
onStop(function() daemons(0))

ui <- fluidPage(
  titlePanel("mirai and Shiny"),
  numericInput("n", "n", value = 100, min = 1),
  actionButton("go", "Sum the squares of 1 to n (takes 3 seconds)"),
  h4("Progress"),
  uiOutput("progress"),
  h4("Result"),
  textOutput("result"),
  h4("Server clock"),
  textOutput("clock")
)

server <- function(input, output, session) {
  result <- reactiveVal("Press the button to start.")
  steps <- reactiveVal(0)

  observeEvent(input$go, {
    n <- input$n
    req(n >= 1)
    result("Computing...")
    steps(0)
    # mirai() returns at once; the expression is evaluated on a daemon.
    # Variables it needs are passed by name (`n = n`).
    m <- mirai(
      {
        start <- Sys.time()
        for (i in 1:10) {
          Sys.sleep(0.3)
          message(sprintf("step %d of 10", i))
        }
        list(value = sum(as.numeric(seq_len(n))^2), pid = Sys.getpid(),
             start = start, end = Sys.time())
      },
      n = n
    )
    # Each step's message, as it arrives: the bar moves while the task runs.
    done <- 0
    on_relay(m, function(cond) {
      done <<- done + 1
      steps(done)
    })
    # Once the mirai resolves, its promise hands the value to the callback,
    # which updates `result`; an error on the daemon rejects the promise.
    m %...>% (function(r) {
      result(sprintf("%s (computed by process %d, from %s to %s)",
                     format(r$value, big.mark = ","), r$pid,
                     format(r$start, "%H:%M:%OS1"), format(r$end, "%H:%M:%OS1")))
    }) %...!% (function(e) result(paste("Error:", conditionMessage(e))))
    # Return nothing, not the promise: Shiny would hold back this session's
    # outputs (the clock too) until a returned promise settles.
    NULL
  })

  output$result <- renderText(result())

  output$progress <- renderUI(
    tagList(tags$progress(value = steps(), max = 10),
            sprintf(" %d of 10 steps", steps()))
  )

  # Re-rendered four times a second by the server.
  output$clock <- renderText({
    invalidateLater(250)
    format(Sys.time(), "%H:%M:%OS1")
  })
}

shinyApp(ui, server)
